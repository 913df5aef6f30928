/*
 * vmtree guest runtime: entry points in assembly.
 *
 * _start          every vCPU enters here (64-bit, CPL0, IF=0, RDI = vCPU
 *                 index, RSI = boot_params); switches to the vCPU's own
 *                 ring-0 stack without writing the boot stack and calls
 *                 rt_boot (rt_boot.c).
 * rt_enter_user   iretq to ring 3 at rt_user_start.
 * rt_isr_stubs    exception vectors 0..31, RT_ISR_STUB_SIZE bytes apart,
 *                 at RT_ISR_STUBS_ADDR (guest.ld) so the IDT is a constant.
 *
 * Everything here except rt_user_start runs at CPL0 and lives in
 * .text.ring0*, so its size can be checked (docs/guests.md).
 */
#include "rt_layout.h"

    .code64

/*
 * Exception stubs: push a zero error code where the CPU pushes none, then
 * the vector, and jump to the common path.  Frame there:
 *   0(%rsp) vector, 8 error code, 16 RIP, 24 CS, 32 RFLAGS, 40 RSP, 48 SS.
 */
.macro ISR_STUB vec
    .balign RT_ISR_STUB_SIZE
    .if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq $0
    .endif
    pushq $\vec
    jmp rt_isr_common
.endm

    .section .text.ring0.isr, "ax"
    .globl rt_isr_stubs
rt_isr_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ISR_STUB \v
    .endr

rt_isr_common:
    movq 0(%rsp), %rdi                  /* vector */
    movq 8(%rsp), %rsi                  /* error code */
    movq 16(%rsp), %rdx                 /* RIP */
    movq %cr2, %rcx
    movq 24(%rsp), %r8                  /* CS */
    andq $-16, %rsp
    call rt_fault                       /* rt_boot.c: prints, exits; no return */
3:  hlt
    jmp 3b

    .section .text.ring0, "ax"
    .globl _start
    .type _start, @function
_start:
    cmpq $RT_MAX_CPUS, %rdi
    jae 1f
    leaq 1(%rdi), %rax
    shlq $RT_KSTACK_SHIFT, %rax         /* (cpu + 1) * RT_KSTACK_SIZE */
    leaq rt_kstack(%rax), %rsp
    call rt_boot                        /* rt_boot(cpu, boot_params): no return */
    ud2
1:  movb $RT_STATUS_TOO_MANY_CPUS, %al  /* no stack of its own: just stop */
    outb %al, $RT_PORT_EXIT
2:  hlt
    jmp 2b
    .size _start, . - _start

/* void rt_enter_user(unsigned cpu, const char *cmdline, uint64_t user_rsp) */
    .globl rt_enter_user
    .type rt_enter_user, @function
rt_enter_user:
    pushq $RT_SEL_UDATA                 /* SS */
    pushq %rdx                          /* RSP */
    pushq $0x2                          /* RFLAGS: IF=0, IOPL=0 */
    pushq $RT_SEL_UCODE                 /* CS */
    leaq rt_user_start(%rip), %rax
    pushq %rax                          /* RIP */
    iretq                               /* RDI, RSI pass through */
    .size rt_enter_user, . - rt_enter_user

/* Ring 3 from here on. */
    .section .text, "ax"
    .globl rt_user_start
    .type rt_user_start, @function
rt_user_start:
    call rt_user_main                   /* rt.c: guest_main, then rt_exit(0) */
    ud2
    .size rt_user_start, . - rt_user_start

    .section .note.GNU-stack, "", @progbits
