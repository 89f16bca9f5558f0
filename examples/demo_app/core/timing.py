import os


def scaled(seconds):
    """Task durations stand in for real work; DEMO_TIME_SCALE shrinks them for tests."""
    return seconds * float(os.environ.get("DEMO_TIME_SCALE", "1"))
