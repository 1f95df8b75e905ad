"""A frame chain gone bad, on purpose, for ember's tests: spin() points its own interpreter
frame's `previous` at itself (MODE loop) or at unmapped memory (MODE unmapped) through ctypes,
burns SECONDS of CPU in that frame, and puts it back before it returns (CPython 3.11 layout:
PyFrameObject.f_frame at 24, _PyInterpreterFrame.previous at 48).

    python3.11 corrupt.py MODE [SECONDS]
"""
import ctypes
import sys
import time

F_FRAME = 24
PREVIOUS = 48


def spin(mode, seconds):
    frame = ctypes.c_void_p.from_address(id(sys._getframe()) + F_FRAME).value
    previous = ctypes.c_void_p.from_address(frame + PREVIOUS)
    saved = previous.value
    previous.value = frame if mode == "loop" else 0x10
    start = time.thread_time()
    x = 0
    while time.thread_time() - start < seconds:
        x += 1
    previous.value = saved
    return x


def main():
    assert sys.version_info[:2] == (3, 11), "the offsets are CPython 3.11's"
    spin(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)


if __name__ == "__main__":
    main()
