"""Every role's argument spec and its defaults/main.yml say the same: each default is an option,
each option with a default has it there with the same value (a Jinja default is described, not
compared), and each option without one is not in defaults. Exits 1 naming each difference."""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def differences(role):
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    specs = (yaml.safe_load(specs_file.read_text()) or {}).get("argument_specs", {}) if specs_file.exists() else {}
    options = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    found = []
    for name in sorted(set(defaults) - set(options)):
        found.append(f"{defaults_file}: {name} is in the defaults but no entry point of {specs_file} declares it")
    for name, spec in sorted(options.items()):
        value = defaults.get(name)
        if name not in defaults:
            if "default" in spec:
                found.append(f"{specs_file}: {name} has default {spec['default']!r} but {defaults_file} lacks it")
            continue
        if isinstance(value, str) and "{{" in value:
            if "default" in spec:
                found.append(f"{specs_file}: {name}'s default is Jinja in {defaults_file}; describe it, give none")
            continue
        if "default" not in spec:
            found.append(f"{specs_file}: {name} gives no default, {defaults_file} gives {value!r}")
        elif spec["default"] != value:
            found.append(f"{specs_file}: {name} says default {spec['default']!r}, {defaults_file} gives {value!r}")
    return found


def main():
    found = [line for role in sorted((ROOT / "roles").iterdir()) if role.is_dir() for line in differences(role)]
    for line in found:
        print(line)
    print(f"argument specs: {len(found)} difference(s) with the defaults")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
