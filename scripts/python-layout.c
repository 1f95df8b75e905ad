/* Prints the offsets ember reads in a CPython's runtime structures (src/python/layout.rs), from
 * the interpreter's own internal headers: compiled by scripts/python-layout.sh against an
 * installed Python. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"
int main(void) {
    printf("runtime.interpreters.head %zu\n", offsetof(_PyRuntimeState, interpreters.head));
    printf("interp.threads.head %zu\n", offsetof(PyInterpreterState, threads.head));
    printf("tstate.next %zu\n", offsetof(PyThreadState, next));
    printf("tstate.native_thread_id %zu\n", offsetof(PyThreadState, native_thread_id));
#if PY_VERSION_HEX >= 0x030d0000
    printf("tstate.current_frame %zu\n", offsetof(PyThreadState, current_frame));
#else
    printf("tstate.cframe %zu\n", offsetof(PyThreadState, cframe));
    printf("cframe.current_frame %zu\n", offsetof(_PyCFrame, current_frame));
#endif
#if PY_VERSION_HEX >= 0x030d0000
    printf("frame.code %zu\n", offsetof(_PyInterpreterFrame, f_executable));
#else
    printf("frame.code %zu\n", offsetof(_PyInterpreterFrame, f_code));
#endif
    printf("frame.previous %zu\n", offsetof(_PyInterpreterFrame, previous));
#if PY_VERSION_HEX >= 0x030d0000
    printf("frame.instr_ptr %zu\n", offsetof(_PyInterpreterFrame, instr_ptr));
#else
    printf("frame.prev_instr %zu\n", offsetof(_PyInterpreterFrame, prev_instr));
#endif
#if PY_VERSION_HEX < 0x030c0000
    printf("frame.is_entry %zu\n", offsetof(_PyInterpreterFrame, is_entry));
#endif
    printf("frame.owner %zu\n", offsetof(_PyInterpreterFrame, owner));
    printf("code.qualname %zu\n", offsetof(PyCodeObject, co_qualname));
    printf("code.name %zu\n", offsetof(PyCodeObject, co_name));
    printf("code.filename %zu\n", offsetof(PyCodeObject, co_filename));
    printf("code.linetable %zu\n", offsetof(PyCodeObject, co_linetable));
    printf("code.firstlineno %zu\n", offsetof(PyCodeObject, co_firstlineno));
    printf("code.code_adaptive %zu\n", offsetof(PyCodeObject, co_code_adaptive));
    printf("code.ob_type %zu\n", offsetof(PyObject, ob_type));
    printf("unicode.state %zu\n", offsetof(PyASCIIObject, state));
    printf("unicode.length %zu\n", offsetof(PyASCIIObject, length));
    printf("ascii.data %zu\n", sizeof(PyASCIIObject));
    printf("compact.data %zu\n", sizeof(PyCompactUnicodeObject));
    printf("bytes.size %zu\n", offsetof(PyVarObject, ob_size));
    printf("bytes.data %zu\n", offsetof(PyBytesObject, ob_sval));
    return 0;
}
