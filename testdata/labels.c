/* Spends its time in label_spin, an assembly function written as a bare label: no symbol
 * type, no size (hand-written assembly often looks like this; ld.so's _start does). A
 * profiler names it from the symbol table all the same. ROUNDS (default 20) of ~50 ms. */
#include <stdlib.h>

__asm__(".text\n"
        ".globl label_spin\n"
        "label_spin:\n"
        "    mov %rdi, %rcx\n"
        "1:  dec %rcx\n"
        "    jnz 1b\n"
        "    ret\n");

void label_spin(unsigned long n);

int main(int argc, char **argv) {
    unsigned long rounds = argc > 1 ? strtoul(argv[1], 0, 10) : 20;
    for (unsigned long i = 0; i < rounds; i++)
        label_spin(100000000UL);
    return 0;
}
