/* hypervisor-glue/serial.c: the 8250 registers a polled driver relies on. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vmm_internal.h"

static uint8_t rd(vmm_serial *s, unsigned reg)
{
    uint8_t v = 0;
    vmm_serial_io(s, (uint16_t)(VMT_PORT_COM1 + reg), false, &v);
    return v;
}

static void wr(vmm_serial *s, unsigned reg, uint8_t v)
{
    vmm_serial_io(s, (uint16_t)(VMT_PORT_COM1 + reg), true, &v);
}

static void polled_driver_prints(void)
{
    vmt_console_buf *cb;
    vmm_serial s;
    CU_ASSERT_EQUAL_FATAL(vmt_console_buf_new(&cb), 0);
    vmm_serial_init(&s, vmt_console_buf_sink, cb);
    /* Linux-style init: 115200 8N1, FIFO on. */
    wr(&s, 1, 0x00);
    wr(&s, 3, 0x80);
    wr(&s, 0, 0x01);
    wr(&s, 1, 0x00);
    wr(&s, 3, 0x03);
    wr(&s, 2, 0xc7);
    wr(&s, 4, 0x0b);
    const char *msg = "ok\n";
    for (const char *p = msg; *p; p++) {
        CU_ASSERT(rd(&s, 5) & 0x20); /* THRE: ready to send */
        wr(&s, 0, (uint8_t)*p);
    }
    char *out = vmt_console_buf_dup(cb, NULL);
    CU_ASSERT_STRING_EQUAL(out, "ok\n");
    free(out);
    CU_ASSERT_EQUAL(s.regs.dll, 1);
    CU_ASSERT_EQUAL(s.regs.dlm, 0);
    CU_ASSERT_EQUAL(rd(&s, 3), 0x03);
    CU_ASSERT_EQUAL(rd(&s, 2) & 0xc1, 0xc1); /* FIFOs on, no interrupt */
    vmm_serial_destroy(&s);
    vmt_console_buf_free(cb);
}

static void registers_read_back_and_divisor_latch_switches(void)
{
    vmm_serial s;
    vmm_serial_init(&s, NULL, NULL);
    wr(&s, 7, 0x5a);
    CU_ASSERT_EQUAL(rd(&s, 7), 0x5a); /* scratch: how drivers detect a UART */
    wr(&s, 1, 0xff);
    CU_ASSERT_EQUAL(rd(&s, 1), 0x0f); /* IER keeps its low nibble */
    wr(&s, 3, 0x83);
    wr(&s, 0, 0x0c);
    wr(&s, 1, 0x02);
    CU_ASSERT_EQUAL(rd(&s, 0), 0x0c);
    CU_ASSERT_EQUAL(rd(&s, 1), 0x02);
    wr(&s, 3, 0x03);
    CU_ASSERT_EQUAL(rd(&s, 1), 0x0f);
    CU_ASSERT_EQUAL(rd(&s, 0), 0x00); /* no input */
    wr(&s, 4, 0x10);                  /* loopback: MSR mirrors MCR */
    wr(&s, 4, 0x1f);
    CU_ASSERT_EQUAL(rd(&s, 6), 0xf0);
    vmm_serial_destroy(&s);
}

static void console_buffer_waits_for_text(void)
{
    vmt_console_buf *cb;
    CU_ASSERT_EQUAL_FATAL(vmt_console_buf_new(&cb), 0);
    vmt_console_buf_sink(cb, "abc marker xyz", 14);
    CU_ASSERT_EQUAL(vmt_console_buf_wait(cb, "marker", 0, 1000000), 10);
    CU_ASSERT_EQUAL(vmt_console_buf_wait(cb, "marker", 10, 1000000), VMT_ETIMEDOUT);
    vmt_console_buf_free(cb);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"polled_driver_prints", polled_driver_prints},
        {"registers_read_back_and_divisor_latch_switches",
         registers_read_back_and_divisor_latch_switches},
        {"console_buffer_waits_for_text", console_buffer_waits_for_text},
        {NULL, NULL},
    };
    return vmt_test_run("vmm_serial", cases, NULL, NULL);
}
