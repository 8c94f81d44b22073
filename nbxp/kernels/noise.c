/* Poisson deviates for noise images, drawn exactly as nanoBragg draws them.
 *
 * The Python reference is nbxp/rng.py (classes Ran1 and Deviates); this file is a line-for-
 * line translation of it, so the two must stay in step.  Numerical Recipes' ran1 (the Park-
 * Miller "minimal standard" generator with a 32-entry Bays-Durham shuffle) feeds poidev:
 * multiplication of uniforms below a mean of 12, rejection from a Lorentzian up to 1e6, and
 * a Gaussian approximation above.  Every quantity nanoBragg keeps in single precision is a
 * float here; every intermediate it evaluates in double is a double.  Build without
 * floating-point contraction or fast-math (-ffp-contract=off), which would change roundings.
 *
 * One serial stream: the pixels' means come in nanoBragg's pixel order and the counts go out
 * in the same order.
 */

#include <math.h>
#include <stdint.h>

#define RAN1_IA 16807
#define RAN1_IM 2147483647
#define RAN1_AM (1.0 / RAN1_IM)
#define RAN1_NTAB 32
#define RAN1_NDIV (1 + (RAN1_IM - 1) / RAN1_NTAB)
#define RAN1_RNMX (1.0 - 1.2e-7)
#define NBXP_PI 3.141592653589793

typedef struct {
    int64_t idum, iy;
    int64_t iv[RAN1_NTAB];
    /* poidev's cached constants for the last mean, and gaussdev's spare deviate */
    float oldm, sq, alxm, g;
    int have_spare;
    float spare;
} nbxp_stream;

/* ``idum0`` is the value ran1 is first called with: nanoBragg passes -|seed| */
static void stream_init(nbxp_stream *s, int64_t idum0)
{
    int64_t idum = -idum0;
    if (idum < 1) idum = 1;
    for (int j = RAN1_NTAB + 7; j >= 0; --j) {
        idum = (RAN1_IA * idum) % RAN1_IM;
        if (j < RAN1_NTAB) s->iv[j] = idum;
    }
    s->idum = idum;
    s->iy = s->iv[0];
    s->oldm = -1.0f;
    s->sq = s->alxm = s->g = 0.0f;
    s->have_spare = 0;
    s->spare = 0.0f;
}

static float ran1(nbxp_stream *s)
{
    s->idum = (RAN1_IA * s->idum) % RAN1_IM;
    int64_t j = s->iy / RAN1_NDIV;
    s->iy = s->iv[j];
    s->iv[j] = s->idum;
    float temp = (float)(RAN1_AM * (double)s->iy);
    return (temp > RAN1_RNMX) ? (float)RAN1_RNMX : temp;
}

static float gammln(float xx)
{
    static const double cof[6] = {76.18009172947146, -86.50532032941677, 24.01409824083091,
                                  -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5};
    double x = xx, y = xx;
    double tmp = x + 5.5;
    tmp -= (x + 0.5) * log(tmp);
    double ser = 1.000000000190015;
    for (int j = 0; j < 6; ++j) ser += cof[j] / ++y;
    return (float)(-tmp + log(2.5066282746310005 * ser / x));
}

static float gauss(nbxp_stream *s)
{
    if (s->have_spare) {
        s->have_spare = 0;
        return s->spare;
    }
    float v1, v2, rsq;
    do {
        v1 = (float)(2.0 * ran1(s) - 1.0);
        v2 = (float)(2.0 * ran1(s) - 1.0);
        rsq = v1 * v1 + v2 * v2;
    } while (!(rsq > 0.0f && rsq < 1.0f));
    float fac = (float)sqrt(-2.0 * log((double)rsq) / rsq);
    s->spare = v1 * fac;
    s->have_spare = 1;
    return v2 * fac;
}

static float poisson(nbxp_stream *s, float xm)
{
    if (xm > 1.0e6f) return (float)(xm + sqrt((double)xm) * gauss(s));
    if (xm < 12.0f) {
        if (xm != s->oldm) {
            s->oldm = xm;
            s->g = (float)exp(-(double)xm);
        }
        float em = -1.0f, t = 1.0f;
        do {
            em += 1.0f;
            t *= ran1(s);
        } while (t > s->g);
        return em;
    }
    if (xm != s->oldm) {
        s->oldm = xm;
        s->sq = (float)sqrt(2.0 * xm);
        s->alxm = (float)log((double)xm);
        s->g = xm * s->alxm - gammln(xm + 1.0f);
    }
    float em, y, t;
    do {
        do {
            y = (float)tan(NBXP_PI * ran1(s));
            em = s->sq * y + xm;
        } while (em < 0.0f);
        em = floorf(em);
        float arg = em * s->alxm - gammln(em + 1.0f) - s->g;
        t = (float)(0.9 * (1.0 + (double)(y * y)) * exp((double)arg));
    } while (ran1(s) > t);
    return em;
}

/* Counts for ``n`` means in order, from a fresh stream started at ``idum0`` (as
 * nbxp.rng.Deviates(idum0)). */
int nbxp_poisson_counts(const float *means, int64_t n, int64_t idum0, float *counts)
{
    nbxp_stream s;
    stream_init(&s, idum0);
    for (int64_t i = 0; i < n; ++i) counts[i] = poisson(&s, means[i]);
    return 0;
}
