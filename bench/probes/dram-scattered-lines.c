// How much DRAM time skipping scattered cache lines saves (docs/activation-sparsity.md).
//
// Reads a 256 MiB buffer (far beyond the last-level cache) line by line, keeping a random
// fraction of the lines in runs of G consecutive lines, with a software prefetch 160 lines
// ahead (as the column-skipping kernels prefetch their active columns), and prints the time
// against reading every line. One thread; best of 3.
//
//   gcc -O2 -mavx2 bench/probes/dram-scattered-lines.c -o /tmp/dram && /tmp/dram
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define SIZE (256L << 20)

int main(void) {
    uint8_t *buf = aligned_alloc(4096, SIZE);
    long lines = SIZE / 64;
    for (long i = 0; i < SIZE; i += 64) buf[i] = (uint8_t)i;
    long *idx = malloc(lines * sizeof(long));
    const int runs[] = {1, 3, 6, 12, 24, 64};
    const int kept[] = {100, 60, 40};
    printf("| run length (lines) | kept | ms | GB/s of kept lines |\n|---:|---:|---:|---:|\n");
    for (unsigned r = 0; r < sizeof runs / sizeof *runs; r++) {
        for (unsigned k = 0; k < sizeof kept / sizeof *kept; k++) {
            int g = runs[r];
            srand(1);
            long n = 0;
            for (long i = 0; i < lines; i += g) {
                if (rand() % 100 < kept[k])
                    for (int j = 0; j < g && i + j < lines; j++) idx[n++] = (i + j) * 64;
            }
            double best = 1e9;
            for (int rep = 0; rep < 3; rep++) {
                __m256i acc = _mm256_setzero_si256();
                double t = now();
                for (long i = 0; i < n; i++) {
                    _mm_prefetch((const char *)buf + idx[i + 160 < n ? i + 160 : i], _MM_HINT_T0);
                    acc = _mm256_add_epi8(acc, _mm256_load_si256((const __m256i *)(buf + idx[i])));
                    acc = _mm256_add_epi8(acc, _mm256_load_si256((const __m256i *)(buf + idx[i] + 32)));
                }
                double d = now() - t;
                if (d < best) best = d;
                volatile int sink = _mm256_extract_epi32(acc, 0);
                (void)sink;
            }
            printf("| %d | %d %% | %.1f | %.2f |\n", g, kept[k], best * 1e3, n * 64 / best / 1e9);
        }
    }
    return 0;
}
