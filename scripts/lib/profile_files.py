"""The files the Python measures read (scripts/lib/python-shares.py, startup-shares.py): what a
workload printed of itself, and a profiler's collapsed stacks."""


def read_truth(path):
    """The "truth NAME PERCENT" lines a workload printed: {NAME: PERCENT}."""
    truth = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "truth":
                truth[parts[1]] = float(parts[2])
    return truth


def read_folded(path):
    """Collapsed stacks ("frame;frame;... COUNT" a line): [(frames, count)]."""
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            frames, _, count = line.rpartition(" ")
            stacks.append((frames.split(";"), int(count)))
    return stacks
