/* A CPython interpreter that lives in the shared libpython (as pyenv's and many distributions'
 * builds do), for ember's tests: Debian's /usr/bin/python3.11 has the interpreter linked in,
 * this one maps libpython3.11.so. Runs like `python3 ARGS`.
 *
 * Build: gcc -I/usr/include/python3.11 embed.c -lpython3.11 -o python-shared */
#include <Python.h>

int main(int argc, char **argv) { return Py_BytesMain(argc, argv); }
