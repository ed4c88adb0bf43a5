/*
 * fpu — vector, x87 and control registers survive checkpoint/restore (x86-64 only).
 *
 *   fpu --out F --ready F
 *
 * Loads distinct random patterns into xmm0-15 (ymm0-15, upper halves included, when
 * the CPU has AVX), puts pi, log10(2) and an accumulator on the x87 stack, sets the x87
 * control word and MXCSR to round toward zero, then spins in one asm loop that touches
 * none of those vector registers: each iteration does `pause`, adds 1.0 to the x87
 * accumulator, increments a counter, and polls the SIGTERM flag (the signal handler
 * runs with its own FPU state; the kernel restores ours afterwards).
 * After the flag: all vector registers are stored and compared with the patterns
 * (differing registers are named), the x87 accumulator must equal the iteration count,
 * the x87 constants stored under round-toward-zero must match values computed the same
 * way at setup, FNSTCW/STMXCSR must read back the non-default values, and an SSE
 * division must still round toward zero.
 * AVX-512 state (zmm upper halves, zmm16-31, k0-7) is not covered.
 */
#include "zdtm.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "fpu is x86-64 only"
#endif

#define X87_CW 0x0f7f   /* all exceptions masked, 64-bit precision, round toward zero */
#define MXCSR  0x7f80   /* all exceptions masked, round toward zero */

static unsigned char pat[16][32] __attribute__((aligned(32)));
static unsigned char got[16][32] __attribute__((aligned(32)));

struct x87 {
    double acc, lg2, pi;
};

/* Spin until zdtm_stop; registers are loaded before and stored after the loop. */
#define LOOP                                                                          \
    "fldpi\n\t"                                                                       \
    "fldlg2\n\t"                                                                      \
    "fldz\n\t"                                                                        \
    "1:\n\t"                                                                          \
    "pause\n\t"                                                                       \
    "fld1\n\t"                                                                        \
    "faddp %%st, %%st(1)\n\t"                                                         \
    "incq %[n]\n\t"                                                                   \
    "cmpl $0, (%[f])\n\t"                                                             \
    "je 1b\n\t"                                                                       \
    "fstpl %[acc]\n\t"                                                                \
    "fstpl %[lg2]\n\t"                                                                \
    "fstpl %[pi]\n\t"

#define CLOBBERS                                                                      \
    "memory", "cc", "st", "st(1)", "st(2)", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",   \
        "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",   \
        "xmm14", "xmm15"

static unsigned long long spin_avx(struct x87 *x)
{
    unsigned long long n = 0;
    asm volatile(
        "vmovdqa 0*32(%[p]), %%ymm0\n\t"  "vmovdqa 1*32(%[p]), %%ymm1\n\t"
        "vmovdqa 2*32(%[p]), %%ymm2\n\t"  "vmovdqa 3*32(%[p]), %%ymm3\n\t"
        "vmovdqa 4*32(%[p]), %%ymm4\n\t"  "vmovdqa 5*32(%[p]), %%ymm5\n\t"
        "vmovdqa 6*32(%[p]), %%ymm6\n\t"  "vmovdqa 7*32(%[p]), %%ymm7\n\t"
        "vmovdqa 8*32(%[p]), %%ymm8\n\t"  "vmovdqa 9*32(%[p]), %%ymm9\n\t"
        "vmovdqa 10*32(%[p]), %%ymm10\n\t" "vmovdqa 11*32(%[p]), %%ymm11\n\t"
        "vmovdqa 12*32(%[p]), %%ymm12\n\t" "vmovdqa 13*32(%[p]), %%ymm13\n\t"
        "vmovdqa 14*32(%[p]), %%ymm14\n\t" "vmovdqa 15*32(%[p]), %%ymm15\n\t"
        LOOP
        "vmovdqa %%ymm0, 0*32(%[g])\n\t"  "vmovdqa %%ymm1, 1*32(%[g])\n\t"
        "vmovdqa %%ymm2, 2*32(%[g])\n\t"  "vmovdqa %%ymm3, 3*32(%[g])\n\t"
        "vmovdqa %%ymm4, 4*32(%[g])\n\t"  "vmovdqa %%ymm5, 5*32(%[g])\n\t"
        "vmovdqa %%ymm6, 6*32(%[g])\n\t"  "vmovdqa %%ymm7, 7*32(%[g])\n\t"
        "vmovdqa %%ymm8, 8*32(%[g])\n\t"  "vmovdqa %%ymm9, 9*32(%[g])\n\t"
        "vmovdqa %%ymm10, 10*32(%[g])\n\t" "vmovdqa %%ymm11, 11*32(%[g])\n\t"
        "vmovdqa %%ymm12, 12*32(%[g])\n\t" "vmovdqa %%ymm13, 13*32(%[g])\n\t"
        "vmovdqa %%ymm14, 14*32(%[g])\n\t" "vmovdqa %%ymm15, 15*32(%[g])\n\t"
        "vzeroupper\n\t"
        : [n] "+r"(n), [acc] "=m"(x->acc), [lg2] "=m"(x->lg2), [pi] "=m"(x->pi)
        : [p] "r"(pat), [g] "r"(got), [f] "r"(&zdtm_stop)
        : CLOBBERS);
    return n;
}

static unsigned long long spin_sse(struct x87 *x)
{
    unsigned long long n = 0;
    asm volatile(
        "movdqa 0*32(%[p]), %%xmm0\n\t"  "movdqa 1*32(%[p]), %%xmm1\n\t"
        "movdqa 2*32(%[p]), %%xmm2\n\t"  "movdqa 3*32(%[p]), %%xmm3\n\t"
        "movdqa 4*32(%[p]), %%xmm4\n\t"  "movdqa 5*32(%[p]), %%xmm5\n\t"
        "movdqa 6*32(%[p]), %%xmm6\n\t"  "movdqa 7*32(%[p]), %%xmm7\n\t"
        "movdqa 8*32(%[p]), %%xmm8\n\t"  "movdqa 9*32(%[p]), %%xmm9\n\t"
        "movdqa 10*32(%[p]), %%xmm10\n\t" "movdqa 11*32(%[p]), %%xmm11\n\t"
        "movdqa 12*32(%[p]), %%xmm12\n\t" "movdqa 13*32(%[p]), %%xmm13\n\t"
        "movdqa 14*32(%[p]), %%xmm14\n\t" "movdqa 15*32(%[p]), %%xmm15\n\t"
        LOOP
        "movdqa %%xmm0, 0*32(%[g])\n\t"  "movdqa %%xmm1, 1*32(%[g])\n\t"
        "movdqa %%xmm2, 2*32(%[g])\n\t"  "movdqa %%xmm3, 3*32(%[g])\n\t"
        "movdqa %%xmm4, 4*32(%[g])\n\t"  "movdqa %%xmm5, 5*32(%[g])\n\t"
        "movdqa %%xmm6, 6*32(%[g])\n\t"  "movdqa %%xmm7, 7*32(%[g])\n\t"
        "movdqa %%xmm8, 8*32(%[g])\n\t"  "movdqa %%xmm9, 9*32(%[g])\n\t"
        "movdqa %%xmm10, 10*32(%[g])\n\t" "movdqa %%xmm11, 11*32(%[g])\n\t"
        "movdqa %%xmm12, 12*32(%[g])\n\t" "movdqa %%xmm13, 13*32(%[g])\n\t"
        "movdqa %%xmm14, 14*32(%[g])\n\t" "movdqa %%xmm15, 15*32(%[g])\n\t"
        : [n] "+r"(n), [acc] "=m"(x->acc), [lg2] "=m"(x->lg2), [pi] "=m"(x->pi)
        : [p] "r"(pat), [g] "r"(got), [f] "r"(&zdtm_stop)
        : CLOBBERS);
    return n;
}

static void set_cw(unsigned short cw) { asm volatile("fldcw %0" : : "m"(cw)); }
static unsigned short get_cw(void) { unsigned short cw; asm volatile("fnstcw %0" : "=m"(cw)); return cw; }
static void set_mxcsr(unsigned v) { asm volatile("ldmxcsr %0" : : "m"(v)); }
static unsigned get_mxcsr(void) { unsigned v; asm volatile("stmxcsr %0" : "=m"(v)); return v; }

/* The two x87 constants as the loop stores them, under the current control word. */
static void x87_consts(double *lg2, double *pi)
{
    asm volatile("fldpi\n\tfstpl %0\n\tfldlg2\n\tfstpl %1" : "=m"(*pi), "=m"(*lg2) : : "memory");
}

static volatile double one = 1.0, ten = 10.0;

int main(int argc, char **argv)
{
    zdtm_init(argc, argv, NULL, "xmm/ymm, x87 stack and control words, MXCSR survive C/R");
    int avx = __builtin_cpu_supports("avx");
    zdtm_fill(pat, sizeof(pat), 0xf9u);

    /* Expected values: x87 constants and 1/10 in both rounding modes. */
    double lg2_rn, pi_rn, lg2_rz, pi_rz;
    volatile double q_rn, q_rz;
    x87_consts(&lg2_rn, &pi_rn);
    q_rn = one / ten;
    set_cw(X87_CW);
    set_mxcsr(MXCSR);
    x87_consts(&lg2_rz, &pi_rz);
    q_rz = one / ten;
    if (q_rz == q_rn || (lg2_rz == lg2_rn && pi_rz == pi_rn))
        zdtm_die("round-toward-zero makes no difference here: the check would be vacuous");

    zdtm_info("pid %d: %s, x87 cw %#x, mxcsr %#x", (int)getpid(), avx ? "AVX ymm0-15" : "SSE xmm0-15",
              get_cw(), get_mxcsr());
    zdtm_ready();

    struct x87 x;
    unsigned long long n = avx ? spin_avx(&x) : spin_sse(&x);

    /* Read the control registers before any library code runs. */
    unsigned short cw = get_cw();
    unsigned mxcsr = get_mxcsr();
    volatile double q = one / ten;

    char bad[16 * 24] = "";
    int width = avx ? 32 : 16;
    for (int i = 0; i < 16; i++) {
        if (memcmp(got[i], pat[i], 16))
            snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " xmm%d", i);
        if (width == 32 && memcmp(got[i] + 16, pat[i] + 16, 16))
            snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " ymm%d[255:128]", i);
    }
    if (*bad)
        zdtm_fail("vector registers changed:%s", bad);
    if (cw != X87_CW)
        zdtm_fail("x87 control word %#x, expected %#x", cw, X87_CW);
    if ((mxcsr & ~0x3fu) != MXCSR) /* bits 0-5 are sticky exception flags */
        zdtm_fail("MXCSR %#x, expected %#x", mxcsr, MXCSR);
    if (q != q_rz)
        zdtm_fail("1.0/10.0 = %a, expected %a (round toward zero)", q, q_rz);
    if (x.acc != (double)n)
        zdtm_fail("x87 accumulator %.17g after %llu iterations", x.acc, n);
    if (x.lg2 != lg2_rz || x.pi != pi_rz)
        zdtm_fail("x87 stack: lg2 %a pi %a, expected %a %a", x.lg2, x.pi, lg2_rz, pi_rz);
    if (n == 0)
        zdtm_fail("the loop never ran");
    zdtm_info("%llu iterations", n);
    zdtm_finish();
}
