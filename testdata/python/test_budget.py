"""Tests that burn known amounts of CPU, for ember's --per-test: each test spends its budget
(time.thread_time) in a function of its own, so the tests' shares of the samples are known
before they run: 0.6 : 0.2 : 0.4 (a unittest case among pytest functions). BUDGET scales them.
"""
import os
import time
import unittest

SCALE = float(os.environ.get("BUDGET", "1"))


def burn(seconds):
    start = time.thread_time()
    x = 0
    while time.thread_time() - start < seconds * SCALE:
        x += sum(range(100))
    return x


def test_slow_parse():
    burn(0.6)


def test_quick_check():
    burn(0.2)


class TestRender(unittest.TestCase):
    def test_render_page(self):
        burn(0.4)
