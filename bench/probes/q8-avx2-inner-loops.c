// Ways to form the Q8_0 × Q8_0 integer block sums on AVX2 (no VNNI), timed on one 8-row group
// against a tile of 4 tokens, L1-resident (docs/performance.md, "Q8_0 on AVX2").
//
//   A  today's packed kernel: |w| (vpabsb) once per word, then per token vpsignb + vpmaddubsw
//      + vpmaddwd + vpaddd;
//   B  weights widened to i16 once per word, activations as i16 pairs: per token two
//      broadcasts, two vpmaddwd, two vpaddd;
//   D  weights made unsigned (w + 128) and split into nibbles, i16 sums over the block: per
//      token two vpmaddubsw and two vpaddw;
//   E  unsigned activations times signed weights with no sign step — NOT exact: a pair of
//      255·(-128) products saturates vpmaddubsw; an upper bound only.
//
//   gcc -O3 -mavx2 -mfma bench/probes/q8-avx2-inner-loops.c -o /tmp/q8 && /tmp/q8
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Four bytes at p as one int (no aliasing assumptions). */
static inline int ld32(const void *p) {
    int v;
    memcpy(&v, p, 4);
    return v;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define NB 16 /* blocks per row (k = 512) */
#define NT 4  /* tokens per tile */
#define REPS 2000000

static int8_t W[NB][256] __attribute__((aligned(64)));
static int8_t A[NT][NB][32] __attribute__((aligned(64)));
static int16_t A16[NT][NB][32] __attribute__((aligned(64)));
static float DA[NT][NB + 1];
static float DW[NB][8] __attribute__((aligned(32)));

#define EPILOGUE                                                                                   \
    __m256 dw = _mm256_load_ps(DW[b]);                                                             \
    for (int t = 0; t < NT; t++)                                                                   \
        f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, _mm256_set1_ps(DA[t][b])), f[t]);

__attribute__((noinline)) void kA(__m256 *out) {
    __m256 f[NT];
    for (int t = 0; t < NT; t++) f[t] = _mm256_setzero_ps();
    __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < NB; b++) {
        __m256i s[NT];
        for (int t = 0; t < NT; t++) s[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i w = _mm256_load_si256((__m256i *)&W[b][32 * j]);
            __m256i aw = _mm256_abs_epi8(w);
            for (int t = 0; t < NT; t++) {
                __m256i a = _mm256_set1_epi32(ld32(&A[t][b][4 * j]));
                __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w));
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, ones));
            }
        }
        EPILOGUE
    }
    for (int t = 0; t < NT; t++) out[t] = f[t];
}

__attribute__((noinline)) void kB(__m256 *out) {
    __m256 f[NT];
    for (int t = 0; t < NT; t++) f[t] = _mm256_setzero_ps();
    for (int b = 0; b < NB; b++) {
        __m256i s[NT];
        for (int t = 0; t < NT; t++) s[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_load_si128((__m128i *)&W[b][32 * j]));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_load_si128((__m128i *)&W[b][32 * j + 16]));
            for (int t = 0; t < NT; t++) {
                __m256i a0 = _mm256_set1_epi32(ld32(&A16[t][b][4 * j]));
                __m256i a1 = _mm256_set1_epi32(ld32(&A16[t][b][4 * j + 2]));
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(w0, a0));
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(w1, a1));
            }
        }
        EPILOGUE
    }
    for (int t = 0; t < NT; t++) out[t] = f[t];
}

__attribute__((noinline)) void kD(__m256 *out) {
    __m256 f[NT];
    for (int t = 0; t < NT; t++) f[t] = _mm256_setzero_ps();
    __m256i low = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8(-128);
    __m256i sixteen = _mm256_set1_epi16(16), ones = _mm256_set1_epi16(1);
    for (int b = 0; b < NB; b++) {
        __m256i sl[NT], sh[NT], s[NT];
        for (int t = 0; t < NT; t++) sl[t] = sh[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i u = _mm256_xor_si256(_mm256_load_si256((__m256i *)&W[b][32 * j]), flip);
            __m256i l = _mm256_and_si256(u, low), h = _mm256_and_si256(_mm256_srli_epi16(u, 4), low);
            for (int t = 0; t < NT; t++) {
                __m256i a = _mm256_set1_epi32(ld32(&A[t][b][4 * j]));
                sl[t] = _mm256_add_epi16(sl[t], _mm256_maddubs_epi16(l, a));
                sh[t] = _mm256_add_epi16(sh[t], _mm256_maddubs_epi16(h, a));
            }
        }
        for (int t = 0; t < NT; t++)
            s[t] = _mm256_add_epi32(_mm256_madd_epi16(sl[t], ones), _mm256_madd_epi16(sh[t], sixteen));
        EPILOGUE
    }
    for (int t = 0; t < NT; t++) out[t] = f[t];
}

__attribute__((noinline)) void kE(__m256 *out) {
    __m256 f[NT];
    for (int t = 0; t < NT; t++) f[t] = _mm256_setzero_ps();
    __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < NB; b++) {
        __m256i s[NT];
        for (int t = 0; t < NT; t++) s[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i w = _mm256_load_si256((__m256i *)&W[b][32 * j]);
            for (int t = 0; t < NT; t++) {
                __m256i a = _mm256_set1_epi32(ld32(&A[t][b][4 * j]));
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
            }
        }
        EPILOGUE
    }
    for (int t = 0; t < NT; t++) out[t] = f[t];
}

int main(void) {
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < 256; i++) W[b][i] = (int8_t)((i * 7 + b) % 255 - 127);
    for (int t = 0; t < NT; t++)
        for (int b = 0; b < NB; b++) {
            DA[t][b] = 0.01f * (t + 1);
            for (int i = 0; i < 32; i++) A16[t][b][i] = A[t][b][i] = (int8_t)((i * 13 + t + b) % 255 - 127);
        }
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < 8; i++) DW[b][i] = 0.02f;
    void (*k[4])(__m256 *) = {kA, kB, kD, kE};
    const char *name[4] = {"A", "B", "D", "E (inexact)"};
    __m256 o[NT];
    float sink = 0;
    double macs = (double)REPS * NB * 256 * NT;
    printf("GMAC/s per variant, 5 alternating rounds (one thread)\n");
    for (int r = 0; r < 5; r++) {
        for (int v = 0; v < 4; v++) {
            double t0 = now();
            for (int i = 0; i < REPS; i++) {
                k[v](o);
                sink += o[0][0];
            }
            printf("%s %.1f  ", name[v], macs / (now() - t0) / 1e9);
        }
        printf("\n");
    }
    return sink == 1.0f;
}
