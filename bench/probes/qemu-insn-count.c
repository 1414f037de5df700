/*
 * Guest instructions executed by a program under QEMU user-mode emulation: a TCG plugin for
 * QEMU 7.2 (plugin API version 1) that adds each translated block's instruction count to a
 * counter every time the block runs, and prints the total at exit. Used to compare kernels on
 * a CPU this project has no board for (AArch64 tiers): instruction counts, not time.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/insn.so bench/probes/qemu-insn-count.c
 *   qemu-aarch64 -cpu cortex-a72 -plugin /tmp/insn.so -d plugin -L /usr/aarch64-linux-gnu PROGRAM
 *
 * The API is declared here (QEMU's header is not packaged by Debian): the five calls used,
 * with the signatures of QEMU 7.2's include/qemu/qemu-plugin.h. Counts are approximate where
 * a block is left early (faults, syscalls); single-threaded programs only (the counter is not
 * atomic). bench/arm-insn-counts runs it on kernel_speed.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    char line[64];
    snprintf(line, sizeof line, "insns %" PRIu64 "\n", executed);
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                                               char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
