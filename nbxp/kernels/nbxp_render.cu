/*
 * nbxp_render.cu -- nbxp's hot loop: photons per pixel, one CUDA thread per pixel.
 *
 * The specification is tile_values() in nbxp/engine.py; this file is the same loop
 * written out for one pixel, visiting the sub-paths in nanoBragg's order:
 *
 *     sensor layer t, sub-pixel slow, sub-pixel fast   (q = (t*O + ys)*O + xs)
 *       source s
 *         orientation r (phi step x mosaic domain, precomputed cell vectors)
 *
 * so that sub-path number `sub` = (q*S + s)*R + r is the engine's index l, the "first
 * sub-pixel / first rendered source / last layer" factors come out the same, and the
 * running products of -oversample_omega/_polar/_thick multiply in the same order.
 *
 * Everything a sub-path needs is in registers (geometry, lattice factor, polarization,
 * absorption, solid angle); the structure-factor grid, sources and orientations are read
 * from device memory.  All set-up (detector frame, sources, orientations, F grid) is done by
 * the array-API code of nbxp and passed in; nbxp/gpu.py launches this kernel.
 *
 * Precision: `real` is NBXP_REAL, double unless compiled with -DNBXP_REAL=float.  The
 * file has no #include so NVRTC (cupy.RawModule) compiles it as it is; for the CPU build
 * used by the tests, nbxp/kernels/cuda_cpu.h supplies the CUDA built-ins.
 *
 * Tricubic interpolation and its fallback: a thread uses tricubic F for its pixel position
 * i and sub-path `sub` while (i, sub) precedes (switch_pixel, switch_sub) in loop order;
 * nearest-neighbour F from there on.  With NBXP_INTERPOLATE set it records in
 * first_oor[i - start] the first *evaluated* sub-path whose 4x4x4 neighbourhood leaves the
 * grid (-1 if none), and the thread at (switch_pixel, switch_sub) writes that sub-path's
 * h, k, l to trigger[0..2].  The host runs a pass with no switch, finds the first pixel
 * that recorded one, and re-runs the pixels from there with the switch at that point.
 */

#ifndef NBXP_REAL
#define NBXP_REAL double
#endif
typedef NBXP_REAL real;

/* values of `shape` */
enum nbxp_shape {
    NBXP_SHAPE_SQUARE = 0,
    NBXP_SHAPE_ROUND = 1,
    NBXP_SHAPE_GAUSS = 2,
    NBXP_SHAPE_TOPHAT = 3
};

/* bits of `flags` */
enum nbxp_flag {
    NBXP_CURVED = 1,             /* curved detector: every pixel at `distance` */
    NBXP_POINT_PIXEL = 2,        /* solid angle 1/R^2 */
    NBXP_CAPTURE = 4,            /* sensor absorption (thickness > 0 or -oversample_thick) on
                                    some panel; each panel's frame says whether on it */
    NBXP_POLAR = 8,              /* polarization factor computed (not -nopolar alone) */
    NBXP_OVERSAMPLE_OMEGA = 16,  /* running products instead of the "once" factors */
    NBXP_OVERSAMPLE_POLAR = 32,
    NBXP_OVERSAMPLE_THICK = 64,
    NBXP_MASK = 128,             /* skip pixels whose mask byte is 0 */
    NBXP_HKL = 256,              /* F from the grid (else default_F everywhere) */
    NBXP_INTERPOLATE = 512,      /* tricubic F before the switch point, and recording */
    NBXP_INTEGER_N = 1024        /* SQUARE with integer Na, Nb, Nc: range-reduced sincg */
};

/* launches use at most NBXP_MAX_BLOCK threads per block: with __launch_bounds__ below the
   compiler fits two such blocks on a multiprocessor (<= 128 registers per thread; float64
   would take 172 otherwise and run one block, 8 warps, per multiprocessor) */
enum nbxp_launch { NBXP_MAX_BLOCK = 256, NBXP_MIN_BLOCKS = 2 };

/* the layout of one row of `frames` (a panel's frame and sensor, 24 reals), of one row of
   `layout` (where a panel's ROI positions and pixels lie, 8 long longs) and of one row of
   `sources` (10 reals).  A panel's ROI positions are pos_start .. pos_start+pos_count-1
   (row-major over its ROI rectangle of width roi_w from (f0, s0)); its pixels start at
   pixel_start in the global pixel index (the panels concatenated, each slow*fpixels+fast).
   nanoBragg's detector is one panel. */
enum nbxp_layout {
    NBXP_FRAME_PIX0 = 0, NBXP_FRAME_FDET = 3, NBXP_FRAME_SDET = 6, NBXP_FRAME_ODET = 9,
    NBXP_FRAME_BEAM = 12, NBXP_FRAME_PIXEL_SIZE = 15, NBXP_FRAME_SUBPIXEL = 16, NBXP_FRAME_CLOSE = 17,
    NBXP_FRAME_DISTANCE = 18, NBXP_FRAME_THICKSTEP = 19, NBXP_FRAME_MU = 20, NBXP_FRAME_CAPTURE = 21,
    NBXP_FRAME_SIZE = 24,
    NBXP_LAYOUT_POS_START = 0, NBXP_LAYOUT_POS_COUNT = 1, NBXP_LAYOUT_PIXEL_START = 2, NBXP_LAYOUT_FPIXELS = 3,
    NBXP_LAYOUT_F0 = 4, NBXP_LAYOUT_S0 = 5, NBXP_LAYOUT_ROI_W = 6, NBXP_LAYOUT_THICKSTEPS = 7,
    NBXP_LAYOUT_SIZE = 8,
    NBXP_SOURCE_INCIDENT = 0, NBXP_SOURCE_LAMBDA = 3, NBXP_SOURCE_E_IN = 4,
    NBXP_SOURCE_B_IN = 7, NBXP_SOURCE_SIZE = 10
};

/* ------------------------------------------------------------------ precision */

/* The math functions used, with an overload per precision, so the float build calls the
   single-precision functions on the GPU and on the CPU alike. */
#define NBXP_MATH1(name)                                                            \
    __device__ __forceinline__ double name##_r(double x) { return name(x); }       \
    __device__ __forceinline__ float name##_r(float x) { return name##f(x); }
NBXP_MATH1(sqrt)
NBXP_MATH1(sin)
NBXP_MATH1(cos)
NBXP_MATH1(exp)
NBXP_MATH1(floor)
NBXP_MATH1(ceil)
NBXP_MATH1(rint)  /* round half to even, as NumPy's round */
#undef NBXP_MATH1

__device__ __forceinline__ double smallest_normal(double) { return 2.2250738585072014e-308; }
__device__ __forceinline__ float smallest_normal(float) { return 1.17549435e-38f; }

/* sin(pi x)/x as a polynomial in z = x^2 for |x| <= 1/2 (pi at z = 0): the coefficients of
   nbxp/physics.py, relative error 6e-14 (double) and 2e-7 (float) */
__device__ __forceinline__ double sinpi_over_x(double z)
{
    double p = z * 0.00044720239425064814;
    p += -0.007363786623417221;  p *= z;
    p += 0.08214473257783624;    p *= z;
    p += -0.5992644257994288;    p *= z;
    p += 2.550164035423543;      p *= z;
    p += -5.167712779977414;     p *= z;
    return p + 3.1415926535895964;
}

__device__ __forceinline__ float sinpi_over_x(float z)
{
    float p = z * 0.07756080372327143f;
    p += -0.5982423660551025f;   p *= z;
    p += 2.550069772582328f;     p *= z;
    p += -5.167709688139303f;    p *= z;
    return p + 3.1415926369616254f;
}

#define NBXP_PI ((real)3.141592653589793)

/* ------------------------------------------------------------------ physics */

/* sin(N pi h)/sin(pi h) for integer N, without sin(N pi h): with h = n + f and N f = m + g
   (n, m nearest integers) it is (-1)^(n (N-1) + m) sin(pi g)/sin(pi f).  Returns the
   magnitude part and stores the exponent of -1 in *k (physics.sincg_product). */
__device__ __forceinline__ real sincg_reduced(real h, real N, real* k)
{
    const real n = rint_r(h);
    const real f = h - n;
    real g = f * N;
    const real m = rint_r(g);
    g -= m;
    real r = N - m / (f + smallest_normal(h));  /* g/f, exactly N where m = 0 */
    r *= sinpi_over_x(g * g);
    r /= sinpi_over_x(f * f);
    *k = n * (N - (real)1) + m;
    return r;
}

/* sin(N x)/sin(x) with the limit N at x = 0 (physics.sincg).  The sines are computed
   unconditionally and the limit selected after: a call inside a branch keeps the CPU
   build's lane loops from vectorising (the vector sin has no masked form) */
__device__ __forceinline__ real sincg(real x, real N)
{
    const real q = sin_r(N * x) / sin_r(x);
    return x == (real)0 ? N : q;
}

/* 3 (sin x - x cos x)/x^3, 1 at x = 0 (physics.sinc3); unconditional as sincg.  cos of
   x + 0 (equal to cos x: it only turns -0 into +0) keeps gcc from fusing the pair into a
   sincos call, which has no vector form */
__device__ __forceinline__ real sinc3(real x)
{
    const real v = (real)3 * (sin_r(x) / x - cos_r(x + (real)0)) / (x * x);
    return x == (real)0 ? (real)1 : v;
}

struct Crystal {
    int shape, integer_N;
    real Na, Nb, Nc, fudge;
    const real* recip;  /* rows a*, b*, c* (1/A), in device memory */
};

/* F_latt of each crystal shape, for fractional Miller indices (physics.lattice_factor);
   lattice_factor() picks one.  The CPU entry (nbxp_render_cpu.cpp) calls them directly
   inside its SIMD lane loops, where the shape is fixed for the whole loop. */

/* SQUARE, integer N: three range-reduced sincg and one combined sign */
__device__ __forceinline__ real lattice_square_integer(const Crystal& X, real h, real k, real l)
{
    real kh, kk, kl;
    const real one = (real)1;
    real F = sincg_reduced(h, X.Na > one ? X.Na : one, &kh)
           * sincg_reduced(k, X.Nb > one ? X.Nb : one, &kk);
    F *= sincg_reduced(l, X.Nc > one ? X.Nc : one, &kl);
    real half = kh + kk;
    half += kl;
    half *= (real)0.5;
    real sign = floor_r(half) - half;  /* 0 for an even total, -1/2 for an odd one */
    sign *= (real)4;
    sign += (real)1;
    return F * sign;
}

/* SQUARE, any N: sin(N pi h)/sin(pi h) per axis with N > 1 (computed for every axis and
   selected, for the CPU build's lane loops as in sincg) */
__device__ __forceinline__ real lattice_square(const Crystal& X, real h, real k, real l)
{
    const real one = (real)1;
    const real fa = sincg(NBXP_PI * h, X.Na), fb = sincg(NBXP_PI * k, X.Nb), fc = sincg(NBXP_PI * l, X.Nc);
    real F = one;
    F *= X.Na > one ? fa : one;
    F *= X.Nb > one ? fb : one;
    F *= X.Nc > one ? fc : one;
    return F;
}

/* distance of x from the nearest integer (nanoBragg's h - h0) */
__device__ __forceinline__ real lattice_offset(real x)
{
    return x - ceil_r(x - (real)0.5);
}

__device__ __forceinline__ real lattice_round(const Crystal& X, real h, real k, real l)
{
    const real d0 = lattice_offset(h), d1 = lattice_offset(k), d2 = lattice_offset(l);
    const real NNN = X.Na * X.Nb * X.Nc;
    const real hrad_sqr = d0 * d0 * (X.Na * X.Na) + d1 * d1 * (X.Nb * X.Nb) + d2 * d2 * (X.Nc * X.Nc);
    return NNN * (real)0.723601254558268 * sinc3(NBXP_PI * sqrt_r(hrad_sqr * X.fudge));
}

/* squared distance from the lattice point in reciprocal space, d* = d0 a* + d1 b* + d2 c*,
   times (Na Nb Nc)^2 (GAUSS and TOPHAT) */
__device__ __forceinline__ real lattice_rad(const Crystal& X, real h, real k, real l)
{
    const real d0 = lattice_offset(h), d1 = lattice_offset(k), d2 = lattice_offset(l);
    real rad = (real)0;
    for (int j = 0; j < 3; ++j) {
        const real ds = X.recip[j] * d0 + X.recip[3 + j] * d1 + X.recip[6 + j] * d2;
        rad += ds * ds;
    }
    return rad * (X.Na * X.Na * X.Nb * X.Nb * X.Nc * X.Nc);
}

__device__ __forceinline__ real lattice_gauss(const Crystal& X, real h, real k, real l)
{
    const real NNN = X.Na * X.Nb * X.Nc;
    return NNN * exp_r(-(lattice_rad(X, h, k, l) / (real)0.63 * X.fudge));
}

__device__ __forceinline__ real lattice_tophat(const Crystal& X, real h, real k, real l)
{
    const real NNN = X.Na * X.Nb * X.Nc;
    /* NNN or 0 (NNN is finite and positive): a product rather than a select, which the CPU
       build's running-product lane loop would not vectorise */
    return NNN * (real)(lattice_rad(X, h, k, l) * X.fudge < (real)0.3969);
}

/* F_latt for fractional Miller indices (physics.lattice_factor) */
__device__ __forceinline__ real lattice_factor(const Crystal& X, real h, real k, real l)
{
    if (X.shape == NBXP_SHAPE_SQUARE)
        return X.integer_N ? lattice_square_integer(X, h, k, l) : lattice_square(X, h, k, l);
    if (X.shape == NBXP_SHAPE_ROUND) return lattice_round(X, h, k, l);
    if (X.shape == NBXP_SHAPE_GAUSS) return lattice_gauss(X, h, k, l);
    return lattice_tophat(X, h, k, l);
}

struct Grid {
    const real* F;  /* the (Hr, Kr, Lr) grid, l fastest; (hmin, kmin, lmin) first */
    int Hr, Kr, Lr, hmin, kmin, lmin;
    real default_F;  /* F outside the grid */
};

/* flat index of integer Miller indices inside the grid */
__device__ __forceinline__ long long grid_index(const Grid& G, int h, int k, int l)
{
    return ((long long)(h - G.hmin) * G.Kr + (k - G.kmin)) * (long long)G.Lr + (l - G.lmin);
}

/* whether an integer-valued x lies in lo .. lo + n - 1 (false for NaN) */
__device__ __forceinline__ bool in_grid(real x, int lo, int n)
{
    return x >= (real)lo && x <= (real)(lo + n - 1);
}

/* F at the nearest lattice point; default_F outside the grid */
__device__ __forceinline__ real F_nearest(const Grid& G, real h, real k, real l)
{
    const real half = (real)0.5;
    const real h0 = ceil_r(h - half), k0 = ceil_r(k - half), l0 = ceil_r(l - half);
    if (!(in_grid(h0, G.hmin, G.Hr) && in_grid(k0, G.kmin, G.Kr) && in_grid(l0, G.lmin, G.Lr)))
        return G.default_F;
    return G.F[grid_index(G, (int)h0, (int)k0, (int)l0)];
}

/* whether the 4x4x4 neighbourhood of (h, k, l) leaves the grid (nanoBragg's test) */
__device__ __forceinline__ bool out_of_range(const Grid& G, real h, real k, real l)
{
    const real three = (real)3, two = (real)2;
    return (h - (real)G.hmin + three > (real)G.Hr) || (h - two < (real)G.hmin)
        || (k - (real)G.kmin + three > (real)G.Kr) || (k - two < (real)G.kmin)
        || (l - (real)G.lmin + three > (real)G.Lr) || (l - two < (real)G.lmin);
}

/* 4-point Lagrange weights at offsets -1, 0, 1, 2 from floor(x), for u = x - floor(x) */
__device__ __forceinline__ void lagrange4(real u, real w[4])
{
    const real d0 = u + (real)1, d1 = u, d2 = u - (real)1, d3 = u - (real)2;
    w[0] = d1 * d2 * d3 / (real)-6;
    w[1] = d0 * d2 * d3 / (real)2;
    w[2] = d0 * d1 * d3 / (real)-2;
    w[3] = d0 * d1 * d2 / (real)6;
}

/* tricubic F; only called where out_of_range() is false, so every point is in the grid */
__device__ __forceinline__ real F_tricubic(const Grid& G, real h, real k, real l)
{
    const real bh = floor_r(h), bk = floor_r(k), bl = floor_r(l);
    real wh[4], wk[4], wl[4];
    lagrange4(h - bh, wh);
    lagrange4(k - bk, wk);
    lagrange4(l - bl, wl);
    const int ih = (int)bh - 1, ik = (int)bk - 1, il = (int)bl - 1;
    real F = (real)0;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            const real wij = wh[i] * wk[j];
            const real* row = G.F + grid_index(G, ih + i, ik + j, il);
            for (int m = 0; m < 4; ++m) F = F + wij * wl[m] * row[m];
        }
    return F;
}

/* v rotated right-handedly by phi about the unit axis a (vectors.rotate_axis) */
__device__ __forceinline__ void rotate_axis(real v[3], const real* a, real phi)
{
    const real s = sin_r(phi), c = cos_r(phi);
    const real d = (a[0] * v[0] + a[1] * v[1] + a[2] * v[2]) * ((real)1 - c);
    const real x = a[0] * d + v[0] * c + (-a[2] * v[1] + a[1] * v[2]) * s;
    const real y = a[1] * d + v[1] * c + (a[2] * v[0] - a[0] * v[2]) * s;
    const real z = a[2] * d + v[2] * c + (-a[1] * v[0] + a[0] * v[1]) * s;
    v[0] = x; v[1] = y; v[2] = z;
}

/* ------------------------------------------------------------------ per sub-pixel, per source */

/* lab position (m) of a sub-pixel centre at detector coordinates Fdet, Sdet, Odet (m);
   on a curved detector the flat lab y and z become arc lengths about sdet and fdet */
__device__ __forceinline__ void subpixel_position(real pos[3], const real* pix0, const real* fdet, const real* sdet,
                                                  const real* odet, const real* beam, real Fdet, real Sdet,
                                                  real Odet, bool curved, real distance)
{
    for (int c = 0; c < 3; ++c)
        pos[c] = fdet[c] * Fdet + sdet[c] * Sdet + (odet[c] * Odet + pix0[c]);
    if (curved) {
        const real ay = pos[1] / distance, az = pos[2] / distance;
        for (int c = 0; c < 3; ++c) pos[c] = distance * beam[c];
        rotate_axis(pos, sdet, ay);
        rotate_axis(pos, fdet, az);
    }
}

/* solid angle (sr) of a pixel at distance airpath (m) (geometry.solid_angle) */
__device__ __forceinline__ real solid_angle(real airpath, bool point_pixel, real pixel_size, real close_distance)
{
    return point_pixel ? (real)1 / (airpath * airpath)
                       : pixel_size * pixel_size / (airpath * airpath) * close_distance / airpath;
}

/* fraction of photons absorbed in sensor layer t for the cosine `parallax` between the
   diffracted direction and odet (geometry.capture_fraction_cos) */
__device__ __forceinline__ real capture_fraction(real parallax, int t, real thickstep, real mu)
{
    return exp_r(-(real)t * thickstep * mu / parallax) - exp_r(-((real)t + (real)1) * thickstep * mu / parallax);
}

/* Kahn polarization factor for diffracted unit vector d and a source row `src`
   (physics.kahn_factor) */
__device__ __forceinline__ real polarization_factor(real d0, real d1, real d2, const real* src, real kahn)
{
    const real* inc = src + NBXP_SOURCE_INCIDENT;
    const real cos2theta = d0 * inc[0] + d1 * inc[1] + d2 * inc[2];
    const real c2 = cos2theta * cos2theta;
    if (kahn == (real)0) return (real)0.5 * ((real)1 + c2);
    const real* E = src + NBXP_SOURCE_E_IN;
    const real* B = src + NBXP_SOURCE_B_IN;
    const real x = d0 * E[0] + d1 * E[1] + d2 * E[2];
    const real y = d0 * B[0] + d1 * B[1] + d2 * B[2];
    const real x2 = x * x, y2 = y * y, r2 = x2 + y2;
    const real cos2psi = r2 == (real)0 ? (real)1 : (x2 - y2) / r2;
    return (real)0.5 * ((real)1 + c2 - kahn * cos2psi * ((real)1 - c2));
}

/* whether -dmin keeps a scattering vector s (1/m): nanoBragg skips sources whose
   resolution 1/|s| is finer than dmin */
__device__ __forceinline__ bool dmin_keeps(real sx, real sy, real sz, real dmin)
{
    if (!(dmin > (real)0)) return true;
    const real stol = (real)0.5 * sqrt_r(sx * sx + sy * sy + sz * sz);
    return !(stol > (real)0 && dmin > (real)0.5 / stol);
}

/* ------------------------------------------------------------------ one pixel */

struct Setup {
    real* image;
    int* first_oor;
    real* trigger;
    const real* sources;
    const real* orient;
    const unsigned char* mask;
    const real* frames;       /* (npanels, NBXP_FRAME_SIZE) */
    const long long* layout;  /* (npanels, NBXP_LAYOUT_SIZE) */
    long long start, switch_pixel;
    int switch_sub, npanels, oversample, nsources, norient, flags;
    real dmin, kahn, default_F, I_bg, scale;
    /* the current panel (select_panel): its ROI positions pos_begin .. pos_end-1, its first
       global pixel, its frame and sensor */
    int panel;
    long long pos_begin, pos_end, pixel_start;
    int fpixels, f0, s0, roi_w, thicksteps;
    bool capture;
    real pixel_size, subpixel, close_distance, distance, thickstep, mu;
    /* pix0 (m) and unit vectors, read from device memory where they are used rather than
       held in registers across the sub-path loops */
    const real *pix0, *fdet, *sdet, *odet, *beam;
    Crystal X;
    Grid G;
};

/* make panel p the current panel of P (its row of `frames` and `layout`) */
__host__ __device__ __forceinline__ void select_panel(Setup& P, int p)
{
    const real* f = P.frames + (long long)NBXP_FRAME_SIZE * p;
    const long long* L = P.layout + (long long)NBXP_LAYOUT_SIZE * p;
    P.panel = p;
    P.pos_begin = L[NBXP_LAYOUT_POS_START];
    P.pos_end = P.pos_begin + L[NBXP_LAYOUT_POS_COUNT];
    P.pixel_start = L[NBXP_LAYOUT_PIXEL_START];
    P.fpixels = (int)L[NBXP_LAYOUT_FPIXELS];
    P.f0 = (int)L[NBXP_LAYOUT_F0];
    P.s0 = (int)L[NBXP_LAYOUT_S0];
    P.roi_w = (int)L[NBXP_LAYOUT_ROI_W];
    P.thicksteps = (int)L[NBXP_LAYOUT_THICKSTEPS];
    P.capture = (P.flags & NBXP_CAPTURE) != 0 && f[NBXP_FRAME_CAPTURE] != (real)0;
    P.pixel_size = f[NBXP_FRAME_PIXEL_SIZE];
    P.subpixel = f[NBXP_FRAME_SUBPIXEL];
    P.close_distance = f[NBXP_FRAME_CLOSE];
    P.distance = f[NBXP_FRAME_DISTANCE];
    P.thickstep = f[NBXP_FRAME_THICKSTEP];
    P.mu = f[NBXP_FRAME_MU];
    P.pix0 = f + NBXP_FRAME_PIX0;
    P.fdet = f + NBXP_FRAME_FDET;
    P.sdet = f + NBXP_FRAME_SDET;
    P.odet = f + NBXP_FRAME_ODET;
    P.beam = f + NBXP_FRAME_BEAM;
}

/* the panel holding ROI position i: the last one whose positions start at or before i
   (an empty panel shares its start with the next, which is then the one found) */
__host__ __device__ __forceinline__ int find_panel(const Setup& P, long long i)
{
    int lo = 0, hi = P.npanels - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (P.layout[(long long)NBXP_LAYOUT_SIZE * mid + NBXP_LAYOUT_POS_START] <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* the Setup of a launch from its arguments: the CUDA kernel and the CPU entry
   (nbxp_render_cpu.cpp) take the same list */
__host__ __device__ __forceinline__ void fill_setup(Setup& P,
    real* image, int* first_oor, real* trigger, const real* Fgrid, const real* sources, const real* orient,
    const real* frames, const long long* layout, const real* recip, const unsigned char* mask,
    long long start, long long switch_pixel, int switch_sub, int npanels,
    int oversample, int nsources, int norient,
    int Hr, int Kr, int Lr, int hmin, int kmin, int lmin, int shape, int flags,
    real dmin, real kahn, real Na, real Nb, real Nc, real fudge, real default_F, real I_bg, real scale)
{
    P.image = image; P.first_oor = first_oor; P.trigger = trigger;
    P.sources = sources; P.orient = orient; P.mask = mask; P.frames = frames; P.layout = layout;
    P.start = start; P.switch_pixel = switch_pixel; P.switch_sub = switch_sub; P.npanels = npanels;
    P.oversample = oversample; P.nsources = nsources; P.norient = norient;
    P.flags = flags;
    P.dmin = dmin; P.kahn = kahn;
    P.default_F = default_F; P.I_bg = I_bg; P.scale = scale;
    P.X.shape = shape; P.X.integer_N = (flags & NBXP_INTEGER_N) != 0;
    P.X.Na = Na; P.X.Nb = Nb; P.X.Nc = Nc; P.X.fudge = fudge;
    P.X.recip = recip;
    P.G.F = Fgrid; P.G.Hr = Hr; P.G.Kr = Kr; P.G.Lr = Lr;
    P.G.hmin = hmin; P.G.kmin = kmin; P.G.lmin = lmin; P.G.default_F = default_F;
    select_panel(P, 0);
}

/* photons at ROI position i (of the current panel: row-major in its ROI rectangle),
   written to the image at its global pixel index */
__device__ __forceinline__ void render_pixel(const Setup& P, long long i)
{
    const long long k = i - P.pos_begin;
    const int row = (int)(k / P.roi_w);
    const int spix = P.s0 + row, fpix = P.f0 + (int)(k - (long long)row * P.roi_w);
    const long long pixel = P.pixel_start + (long long)spix * P.fpixels + fpix;
    const int flags = P.flags;
    const bool record = (flags & NBXP_INTERPOLATE) != 0;
    if ((flags & NBXP_MASK) && !P.mask[pixel]) {
        if (record) P.first_oor[i - P.start] = -1;
        return;
    }
    const bool running = (flags & (NBXP_OVERSAMPLE_OMEGA | NBXP_OVERSAMPLE_POLAR | NBXP_OVERSAMPLE_THICK)) != 0;
    const int T = P.thicksteps, O = P.oversample, S = P.nsources, R = P.norient;
    const real F2 = P.default_F * P.default_F;

    real I = running ? P.I_bg : (real)0;
    real omega_first = (real)0, capture_last = (real)0, polar_first = (real)0;
    bool polar_seen = false;
    int first = -1;  /* first evaluated sub-path out of interpolation range */
    int sub = 0;     /* sub-path number (q*S + s)*R + r */

    for (int t = 0; t < T; ++t) {
        const real Odet = (real)t * P.thickstep;
        for (int ys = 0; ys < O; ++ys) {
            const real Sdet = P.subpixel * (real)(spix * O + ys) + P.subpixel / (real)2;
            for (int xs = 0; xs < O; ++xs) {
                const real Fdet = P.subpixel * (real)(fpix * O + xs) + P.subpixel / (real)2;
                real pos[3];
                subpixel_position(pos, P.pix0, P.fdet, P.sdet, P.odet, P.beam, Fdet, Sdet, Odet,
                                  (flags & NBXP_CURVED) != 0, P.distance);
                const real airpath = sqrt_r(pos[0] * pos[0] + pos[1] * pos[1] + pos[2] * pos[2]);
                const real d[3] = {pos[0] / airpath, pos[1] / airpath, pos[2] / airpath};

                const real omega = solid_angle(airpath, (flags & NBXP_POINT_PIXEL) != 0, P.pixel_size,
                                               P.close_distance);
                if (t == 0 && ys == 0 && xs == 0) omega_first = omega;

                real capture = (real)1;
                if (P.capture) {
                    const real parallax = d[0] * P.odet[0] + d[1] * P.odet[1] + d[2] * P.odet[2];
                    capture = capture_fraction(parallax, t, P.thickstep, P.mu);
                    if (t == T - 1 && ys == 0 && xs == 0) capture_last = capture;
                }

                for (int s = 0; s < S; ++s) {
                    const real* src = P.sources + NBXP_SOURCE_SIZE * s;
                    const real* inc = src + NBXP_SOURCE_INCIDENT;
                    const real lambda = src[NBXP_SOURCE_LAMBDA];
                    const real sx = (d[0] - inc[0]) / lambda, sy = (d[1] - inc[1]) / lambda,
                               sz = (d[2] - inc[2]) / lambda;  /* scattering vector, 1/m */

                    const bool rendered = dmin_keeps(sx, sy, sz, P.dmin);  /* not cut by -dmin */

                    real polar = (real)1;
                    if (flags & NBXP_POLAR) {
                        polar = polarization_factor(d[0], d[1], d[2], src, P.kahn);
                        if (rendered && !polar_seen) {
                            polar_first = polar;
                            polar_seen = true;
                        }
                    }
                    if (!rendered) {
                        sub += R;
                        continue;
                    }

                    real gain = (real)1;  /* running-product factor of this (sub-pixel, source) */
                    if (flags & NBXP_OVERSAMPLE_THICK) gain *= capture;
                    if (flags & NBXP_OVERSAMPLE_OMEGA) gain *= omega;
                    if (flags & NBXP_OVERSAMPLE_POLAR) gain *= polar;

                    for (int r = 0; r < R; ++r, ++sub) {
                        const real* a = P.orient + 9 * r;  /* cell vectors a, b, c (m) */
                        real h = a[0] * sx + a[1] * sy;
                        h += a[2] * sz;
                        real k = a[3] * sx + a[4] * sy;
                        k += a[5] * sz;
                        real l = a[6] * sx + a[7] * sy;
                        l += a[8] * sz;

                        const real F_latt = lattice_factor(P.X, h, k, l);
                        /* sub-paths nanoBragg adds in; the others only add zero */
                        const bool evaluated = P.I_bg != (real)0 || F_latt != (real)0;

                        real term;
                        if (flags & NBXP_HKL) {
                            bool tricubic = (flags & NBXP_INTERPOLATE)
                                && (i < P.switch_pixel || (i == P.switch_pixel && sub < P.switch_sub));
                            if (tricubic && out_of_range(P.G, h, k, l)) {
                                if (evaluated && first < 0) first = sub;
                                tricubic = false;
                            }
                            if ((flags & NBXP_INTERPOLATE) && i == P.switch_pixel && sub == P.switch_sub) {
                                P.trigger[0] = h;
                                P.trigger[1] = k;
                                P.trigger[2] = l;
                            }
                            const real F_cell = tricubic ? F_tricubic(P.G, h, k, l) : F_nearest(P.G, h, k, l);
                            term = F_cell * F_latt;
                            term *= term;
                        } else {
                            term = F_latt * F_latt;
                            term *= F2;
                        }
                        if (running && evaluated)
                            I = (I + term) * gain;
                        else
                            I += term;
                    }
                }
            }
        }
    }
    if (!running) I += P.I_bg;
    real value = P.scale * I;
    if (!(flags & NBXP_OVERSAMPLE_THICK) && P.capture) value *= capture_last;
    if (!(flags & NBXP_OVERSAMPLE_OMEGA)) value *= omega_first;
    if (!(flags & NBXP_OVERSAMPLE_POLAR) && (flags & NBXP_POLAR)) value *= polar_first;  /* 0: nothing rendered */
    P.image[pixel] = value;
    if (record) P.first_oor[i - P.start] = first;
}

/* ------------------------------------------------------------------ the kernel */

/*
 * Renders ROI positions start .. start+n-1 (a grid-stride loop: any grid covers them),
 * the positions of every panel in turn (layout), each with its panel's frame.
 *
 * image      (total pixels) photons per pixel, global index; only rendered pixels are written
 * first_oor  (n) with NBXP_INTERPOLATE: first evaluated out-of-range sub-path, or -1
 * trigger    (3) h, k, l at (switch_pixel, switch_sub)
 * Fgrid      F on the (Hr, Kr, Lr) grid, l fastest, (h, k, l) = (hmin, kmin, lmin) first
 * sources    (nsources, 10): incident unit vector, wavelength (m), E_in, B_in
 * orient     (norient, 9): cell vectors a, b, c (m) per phi step x mosaic domain
 * frames     (npanels, 24): per panel pix0 (m), fdet, sdet, odet, beam unit vectors, pixel size,
 *            sub-pixel size, close distance, distance (m), layer step (m), mu (1/m), capture (0/1)
 * layout     (npanels, 8): per panel pos_start, pos_count, pixel_start, fpixels, f0, s0, roi_w,
 *            thicksteps (nbxp_layout above)
 * recip      (9): reciprocal cell rows a*, b*, c* (1/A)
 * mask       (total pixels) bytes, global index, read with NBXP_MASK
 */
extern "C" __global__ void __launch_bounds__(NBXP_MAX_BLOCK, NBXP_MIN_BLOCKS) nbxp_render(
    real* __restrict__ image, int* __restrict__ first_oor, real* __restrict__ trigger,
    const real* __restrict__ Fgrid, const real* __restrict__ sources, const real* __restrict__ orient,
    const real* __restrict__ frames, const long long* __restrict__ layout, const real* __restrict__ recip,
    const unsigned char* __restrict__ mask,
    long long start, long long n, long long switch_pixel, int switch_sub, int npanels,
    int oversample, int nsources, int norient,
    int Hr, int Kr, int Lr, int hmin, int kmin, int lmin, int shape, int flags,
    real dmin, real kahn, real Na, real Nb, real Nc, real fudge, real default_F, real I_bg, real scale)
{
    Setup P;
    fill_setup(P, image, first_oor, trigger, Fgrid, sources, orient, frames, layout, recip, mask, start,
               switch_pixel, switch_sub, npanels, oversample, nsources, norient, Hr, Kr, Lr, hmin, kmin, lmin,
               shape, flags, dmin, kahn, Na, Nb, Nc, fudge, default_F, I_bg, scale);

    const long long stride = (long long)blockDim.x * gridDim.x;
    long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < start + n) select_panel(P, find_panel(P, i));
    for (; i < start + n; i += stride) {
        if (i >= P.pos_end) select_panel(P, find_panel(P, i));  /* i only grows */
        render_pixel(P, i);
    }
}
