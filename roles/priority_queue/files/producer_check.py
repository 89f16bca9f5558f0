"""Run by verify in the producer's container, fed on stdin: ask the producer's own Celery app where it
routes each task (routes), or queue a backlog through it (backlog). Prints JSON; a Celery app that
cannot be loaded exits 2 with the reason on stderr."""

import json
import sys


def main(argv):
    action, app_name = argv[1], argv[2]
    from celery.app.utils import find_app

    try:
        app = find_app(app_name)
    except Exception as exc:  # the app's own import errors, whatever they are
        sys.stderr.write(f"cannot load the Celery app {app_name!r}: {type(exc).__name__}: {exc}\n")
        return 2
    if action == "routes":
        names = json.loads(argv[3])
        sys.stdout.write(json.dumps({name: app.amqp.router.route({}, name)["queue"].name for name in names}))
    elif action == "backlog":
        task, count = argv[3], int(argv[4])
        for number in range(count):
            app.send_task(task, args=[f"https://verify-backlog.invalid/{number}"])
        sys.stdout.write(json.dumps({"sent": count}))
    else:
        sys.stderr.write(f"unknown action {action!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
