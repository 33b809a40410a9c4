"""Run BVLC's unchanged pycaffe unittest files in one directory and print each case's outcome as JSON.

Started by test_bvlc_pycaffe.py in a subprocess (cwd: a temporary directory, since BVLC's tests write
snapshots into it), so BVLC's module names (test_net, ...) never meet ours in one interpreter.
"""
import json
import sys
import unittest


class _Recorder(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = ["passed", ""]

    def addFailure(self, test, err):
        self.outcomes[test.id()] = ["failed", self._exc_info_to_string(err, test)]

    def addError(self, test, err):
        self.outcomes[test.id()] = ["error", self._exc_info_to_string(err, test)]

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = ["skipped", reason]


def _restore_removed_asserts():
    """BVLC's files use assertEquals/assertRaisesRegexp, which Python 3.12 removed; alias them when absent."""
    for old, new in (("assertEquals", "assertEqual"), ("assertRaisesRegexp", "assertRaisesRegex")):
        if not hasattr(unittest.TestCase, old):
            setattr(unittest.TestCase, old, getattr(unittest.TestCase, new))


def main(test_dir, out_path):
    _restore_removed_asserts()
    suite = unittest.defaultTestLoader.discover(test_dir, pattern="test_*.py", top_level_dir=test_dir)
    result = _Recorder()
    suite.run(result)
    for test, err in result.errors:  # import errors of whole modules come back as errors of no single case
        result.outcomes.setdefault(test.id(), ["error", err])
    with open(out_path, "w") as f:
        json.dump(result.outcomes, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
