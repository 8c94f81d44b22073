/*
 * nbxp_render_cpu.cpp -- the CPU entry of nbxp's render kernel: pixels in SIMD lanes.
 *
 * The physics is the CUDA kernel's: nbxp/kernels/cpu_simd.py compiles this file as
 *
 *     cuda_cpu.h (-include)  +  nbxp_render.cu  +  this file
 *
 * so every per-sub-path quantity (sub-pixel position, solid angle, capture, polarization,
 * the -dmin cut, the lattice factor of each shape, nearest and tricubic F, the fallback
 * rule) comes from the same __device__ functions the GPU runs.  What differs is the
 * traversal.  A GPU thread renders one pixel; here a block of LANES consecutive ROI
 * positions is rendered together, every quantity held as an array of LANES values and
 * every step a loop over the lanes that the compiler turns into SIMD instructions:
 *
 *     block of LANES pixels (OpenMP threads share the blocks)
 *       sensor layer t, sub-pixel slow ys, sub-pixel fast xs     [per lane: geometry]
 *         source s                                               [per lane: S, polar]
 *           orientation r   (uniform: the cell vectors are scalars)
 *             lane j        (SIMD: Miller indices, F_latt, F, the running sum)
 *
 * Each lane visits its sub-paths in the GPU kernel's (nanoBragg's) order and does the same
 * arithmetic in the same order, so each pixel's value is the GPU kernel's for that pixel
 * whatever the lane, block or thread: the image does not depend on the thread count.
 *
 * Nearest F is read from the F grid padded by one cell of default_F on every face (the
 * host makes it): indices are clamped into the border, so the lookup is a clamp and a
 * gather with no branch.  Tricubic F keeps the scalar per-lane path of the GPU kernel
 * (its 64-point stencil and the order-dependent fallback do not vectorise usefully).
 *
 * The transcendental functions of the other shapes and of absorption vectorise through
 * glibc's vector math library (libmvec, declared below) unless NBXP_NO_VECTOR_MATH is
 * defined; the square shape with integer N needs none (its sincg is polynomial).
 */

#include <stdint.h>

#ifndef NBXP_NO_VECTOR_MATH
/* glibc declares these SIMD variants only under -ffast-math; they are accurate to a few
   ulp and the same functions, to the bit, whatever the lane */
extern "C" {
#pragma omp declare simd notinbranch
double sin(double);
#pragma omp declare simd notinbranch
double cos(double);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float sinf(float);
#pragma omp declare simd notinbranch
float cosf(float);
#pragma omp declare simd notinbranch
float expf(float);
}
#endif

/* lanes per block: two vector registers' worth (independent chains hide the latency of
   the divisions), 16 float64 / 32 float32 with AVX-512 */
#ifndef NBXP_LANES
#if defined(__AVX512F__)
#define NBXP_LANES (128 / (int)sizeof(real))
#elif defined(__AVX__)
#define NBXP_LANES (64 / (int)sizeof(real))
#else
#define NBXP_LANES (32 / (int)sizeof(real))
#endif
#endif

namespace nbxp_cpu {

enum { LANES = NBXP_LANES };
enum { F_DEFAULT = 0, F_NEAREST = 1, F_INTERPOLATE = 2 };
enum { L_SQUARE_INTEGER = 0, L_SQUARE = 1, L_ROUND = 2, L_GAUSS = 3, L_TOPHAT = 4 };

#define NBXP_SIMD _Pragma("omp simd")

struct Args {
    real* image;
    float* image32;    /* if not null, the image is written here, rounded to float, instead */
    int* first_oor;
    real* trigger;
    const real* Fpad;  /* (Hr+2, Kr+2, Lr+2), l fastest, border default_F */
    long long start, n, switch_pixel;
    int switch_sub;
    int Kp, Lp;        /* padded grid dimensions */
    real hlo, klo, llo, hhi, khi, lhi;  /* clamp range of h0, k0, l0: grid +- one cell */
    int origin;        /* flat padded index of (0, 0, 0) */
    Setup P;           /* the GPU kernel's set-up: geometry, crystal, original grid, with the
                          panel being rendered selected (select_panel) */
};

template <int LK>
static __forceinline__ real lattice(const Crystal& X, real h, real k, real l)
{
    if (LK == L_SQUARE_INTEGER) return lattice_square_integer(X, h, k, l);
    if (LK == L_SQUARE) return lattice_square(X, h, k, l);
    if (LK == L_ROUND) return lattice_round(X, h, k, l);
    if (LK == L_GAUSS) return lattice_gauss(X, h, k, l);
    return lattice_tophat(X, h, k, l);
}

/* F at the nearest lattice point from the padded grid: F_nearest() without a branch */
static __forceinline__ real F_padded(const Args& A, real h, real k, real l)
{
    const real half = (real)0.5;
    real h0 = ceil_r(h - half), k0 = ceil_r(k - half), l0 = ceil_r(l - half);
    /* comparisons written so that NaN lands on the low border (default_F) */
    h0 = h0 >= A.hlo ? h0 : A.hlo;
    h0 = h0 <= A.hhi ? h0 : A.hhi;
    k0 = k0 >= A.klo ? k0 : A.klo;
    k0 = k0 <= A.khi ? k0 : A.khi;
    l0 = l0 >= A.llo ? l0 : A.llo;
    l0 = l0 <= A.lhi ? l0 : A.lhi;
    const int idx = ((int)h0 * A.Kp + (int)k0) * A.Lp + (int)l0 + A.origin;
    return A.Fpad[idx];
}

/* One block of LANES ROI positions i0 .. i0+LANES-1 of the current panel (those >= end are
   idle lanes; blocks never cross a panel, so the frame is uniform across the lanes). */
template <int LK, int FM, bool RUNNING>
static void render_block(const Args& A, long long i0, long long end)
{
    const Setup& P = A.P;
    const int flags = P.flags;
    const int T = P.thicksteps, O = P.oversample, S = P.nsources, R = P.norient;
    const real F2 = P.default_F * P.default_F;
    const bool curved = (flags & NBXP_CURVED) != 0, point = (flags & NBXP_POINT_PIXEL) != 0;
    const bool capture_on = P.capture, polar_on = (flags & NBXP_POLAR) != 0;
    const bool record = FM == F_INTERPOLATE;

    long long ii[LANES], pixel[LANES];
    int spix[LANES], fpix[LANES];
    bool active[LANES];  /* a real, unmasked position */
    for (int j = 0; j < LANES; ++j) {
        const long long i = i0 + j < end ? i0 + j : end - 1;
        const long long k = i - P.pos_begin;
        const int row = (int)(k / P.roi_w);
        ii[j] = i;
        spix[j] = P.s0 + row;
        fpix[j] = P.f0 + (int)(k - (long long)row * P.roi_w);
        pixel[j] = P.pixel_start + (long long)spix[j] * P.fpixels + fpix[j];
        active[j] = i0 + j < end && !((flags & NBXP_MASK) && !P.mask[pixel[j]]);
    }
    bool any = false;
    for (int j = 0; j < LANES; ++j) any |= active[j];
    if (!any) {
        if (record)
            for (int j = 0; j < LANES && i0 + j < end; ++j) A.first_oor[i0 + j - A.start] = -1;
        return;
    }

    /* per-lane flags are reals (1 or 0): gcc vectorises no loop that mixes bool and real lanes */
    real I[LANES], omega_first[LANES], capture_last[LANES], polar_first[LANES], polar_seen[LANES];
    int first[LANES];
    for (int j = 0; j < LANES; ++j) {
        I[j] = RUNNING ? P.I_bg : (real)0;
        omega_first[j] = capture_last[j] = polar_first[j] = (real)0;
        polar_seen[j] = (real)0;
        first[j] = -1;
    }
    int sub = 0;  /* sub-path number (q*S + s)*R + r: the same in every lane */

    for (int t = 0; t < T; ++t) {
        const real Odet = (real)t * P.thickstep;
        for (int ys = 0; ys < O; ++ys) {
            for (int xs = 0; xs < O; ++xs) {
                /* each step its own lane loop, with every uniform condition outside it: gcc
                   vectorises no loop that holds a bool (uniform or per lane) beside reals */
                real d0[LANES], d1[LANES], d2[LANES], air[LANES], omega[LANES], capture[LANES];
                real Fd[LANES], Sd[LANES];
                for (int j = 0; j < LANES; ++j) {
                    Sd[j] = P.subpixel * (real)(spix[j] * O + ys) + P.subpixel / (real)2;
                    Fd[j] = P.subpixel * (real)(fpix[j] * O + xs) + P.subpixel / (real)2;
                }
                if (curved) {
                    for (int j = 0; j < LANES; ++j) {
                        real pos[3];
                        subpixel_position(pos, P.pix0, P.fdet, P.sdet, P.odet, P.beam, Fd[j], Sd[j], Odet, true,
                                          P.distance);
                        d0[j] = pos[0];
                        d1[j] = pos[1];
                        d2[j] = pos[2];
                    }
                } else {
                    NBXP_SIMD
                    for (int j = 0; j < LANES; ++j) {
                        real pos[3];
                        subpixel_position(pos, P.pix0, P.fdet, P.sdet, P.odet, P.beam, Fd[j], Sd[j], Odet, false,
                                          P.distance);
                        d0[j] = pos[0];
                        d1[j] = pos[1];
                        d2[j] = pos[2];
                    }
                }
                NBXP_SIMD
                for (int j = 0; j < LANES; ++j) {
                    const real airpath = sqrt_r(d0[j] * d0[j] + d1[j] * d1[j] + d2[j] * d2[j]);
                    air[j] = airpath;
                    d0[j] = d0[j] / airpath;
                    d1[j] = d1[j] / airpath;
                    d2[j] = d2[j] / airpath;
                }
                if (point) {
                    NBXP_SIMD
                    for (int j = 0; j < LANES; ++j) omega[j] = solid_angle(air[j], true, P.pixel_size, P.close_distance);
                } else {
                    NBXP_SIMD
                    for (int j = 0; j < LANES; ++j) omega[j] = solid_angle(air[j], false, P.pixel_size, P.close_distance);
                }
                if (t == 0 && ys == 0 && xs == 0)
                    for (int j = 0; j < LANES; ++j) omega_first[j] = omega[j];
                if (capture_on) {
                    NBXP_SIMD
                    for (int j = 0; j < LANES; ++j) {
                        const real parallax = d0[j] * P.odet[0] + d1[j] * P.odet[1] + d2[j] * P.odet[2];
                        capture[j] = capture_fraction(parallax, t, P.thickstep, P.mu);
                    }
                    if (t == T - 1 && ys == 0 && xs == 0)
                        for (int j = 0; j < LANES; ++j) capture_last[j] = capture[j];
                } else {
                    for (int j = 0; j < LANES; ++j) capture[j] = (real)1;
                }

                for (int s = 0; s < S; ++s) {
                    const real* src = P.sources + NBXP_SOURCE_SIZE * s;
                    const real* inc = src + NBXP_SOURCE_INCIDENT;
                    const real lambda = src[NBXP_SOURCE_LAMBDA];
                    const real i0x = inc[0], i0y = inc[1], i0z = inc[2];
                    real sx[LANES], sy[LANES], sz[LANES], gain[LANES], rendered[LANES], polar[LANES];
                    bool any_rendered = false;
                    NBXP_SIMD
                    for (int j = 0; j < LANES; ++j) {
                        sx[j] = (d0[j] - i0x) / lambda;
                        sy[j] = (d1[j] - i0y) / lambda;
                        sz[j] = (d2[j] - i0z) / lambda;
                    }
                    if (P.dmin > (real)0) {
                        NBXP_SIMD
                        for (int j = 0; j < LANES; ++j)
                            rendered[j] = dmin_keeps(sx[j], sy[j], sz[j], P.dmin) ? (real)1 : (real)0;
                    } else {
                        for (int j = 0; j < LANES; ++j) rendered[j] = (real)1;
                    }
                    if (polar_on) {
                        if (P.kahn == (real)0) {
                            NBXP_SIMD
                            for (int j = 0; j < LANES; ++j) polar[j] = polarization_factor(d0[j], d1[j], d2[j], src, (real)0);
                        } else {
                            NBXP_SIMD
                            for (int j = 0; j < LANES; ++j) polar[j] = polarization_factor(d0[j], d1[j], d2[j], src, P.kahn);
                        }
                        for (int j = 0; j < LANES; ++j) {
                            if (rendered[j] != (real)0 && polar_seen[j] == (real)0) {
                                polar_first[j] = polar[j];
                                polar_seen[j] = (real)1;
                            }
                        }
                    } else {
                        for (int j = 0; j < LANES; ++j) polar[j] = (real)1;
                    }
                    for (int j = 0; j < LANES; ++j) gain[j] = (real)1;
                    if (flags & NBXP_OVERSAMPLE_THICK)
                        for (int j = 0; j < LANES; ++j) gain[j] *= capture[j];
                    if (flags & NBXP_OVERSAMPLE_OMEGA)
                        for (int j = 0; j < LANES; ++j) gain[j] *= omega[j];
                    if (flags & NBXP_OVERSAMPLE_POLAR)
                        for (int j = 0; j < LANES; ++j) gain[j] *= polar[j];
                    for (int j = 0; j < LANES; ++j) any_rendered |= rendered[j] != (real)0 && active[j];
                    if (!any_rendered) {
                        sub += R;
                        continue;
                    }

                    for (int r = 0; r < R; ++r, ++sub) {
                        const real* a = P.orient + 9 * r;  /* cell vectors a, b, c (m) */
                        const real a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5],
                                   a6 = a[6], a7 = a[7], a8 = a[8];
                        if (FM != F_INTERPOLATE) {
                            NBXP_SIMD
                            for (int j = 0; j < LANES; ++j) {
                                real h = a0 * sx[j] + a1 * sy[j];
                                h += a2 * sz[j];
                                real k = a3 * sx[j] + a4 * sy[j];
                                k += a5 * sz[j];
                                real l = a6 * sx[j] + a7 * sy[j];
                                l += a8 * sz[j];
                                const real F_latt = lattice<LK>(P.X, h, k, l);
                                real term;
                                if (FM == F_NEAREST) {
                                    term = F_padded(A, h, k, l) * F_latt;
                                    term *= term;
                                } else {
                                    term = F_latt * F_latt;
                                    term *= F2;
                                }
                                real next;
                                if (RUNNING) {
                                    const bool evaluated = P.I_bg != (real)0 || F_latt != (real)0;
                                    next = evaluated ? (I[j] + term) * gain[j] : I[j] + term;
                                } else {
                                    next = I[j] + term;
                                }
                                I[j] = rendered[j] != (real)0 ? next : I[j];
                            }
                        } else {
                            real hh[LANES], kk[LANES], ll[LANES], Fl[LANES];
                            NBXP_SIMD
                            for (int j = 0; j < LANES; ++j) {
                                real h = a0 * sx[j] + a1 * sy[j];
                                h += a2 * sz[j];
                                real k = a3 * sx[j] + a4 * sy[j];
                                k += a5 * sz[j];
                                real l = a6 * sx[j] + a7 * sy[j];
                                l += a8 * sz[j];
                                hh[j] = h;
                                kk[j] = k;
                                ll[j] = l;
                                Fl[j] = lattice<LK>(P.X, h, k, l);
                            }
                            /* the GPU kernel's scalar steps, lane by lane */
                            for (int j = 0; j < LANES; ++j) {
                                if (rendered[j] == (real)0 || !active[j]) continue;
                                const long long i = ii[j];
                                const real h = hh[j], k = kk[j], l = ll[j], F_latt = Fl[j];
                                const bool evaluated = P.I_bg != (real)0 || F_latt != (real)0;
                                bool tricubic = i < A.switch_pixel || (i == A.switch_pixel && sub < A.switch_sub);
                                if (tricubic && out_of_range(P.G, h, k, l)) {
                                    if (evaluated && first[j] < 0) first[j] = sub;
                                    tricubic = false;
                                }
                                if (i == A.switch_pixel && sub == A.switch_sub) {
                                    A.trigger[0] = h;
                                    A.trigger[1] = k;
                                    A.trigger[2] = l;
                                }
                                const real F_cell = tricubic ? F_tricubic(P.G, h, k, l) : F_padded(A, h, k, l);
                                real term = F_cell * F_latt;
                                term *= term;
                                if (RUNNING && evaluated)
                                    I[j] = (I[j] + term) * gain[j];
                                else
                                    I[j] += term;
                            }
                        }
                    }
                }
            }
        }
    }
    for (int j = 0; j < LANES; ++j) {
        if (!active[j]) {
            if (record && i0 + j < end) A.first_oor[i0 + j - A.start] = -1;
            continue;
        }
        real Ij = I[j];
        if (!RUNNING) Ij += P.I_bg;
        real value = P.scale * Ij;
        if (!(flags & NBXP_OVERSAMPLE_THICK) && capture_on) value *= capture_last[j];
        if (!(flags & NBXP_OVERSAMPLE_OMEGA)) value *= omega_first[j];
        if (!(flags & NBXP_OVERSAMPLE_POLAR) && polar_on) value *= polar_first[j];  /* 0: nothing rendered */
        if (A.image32)
            A.image32[pixel[j]] = (float)value;
        else
            A.image[pixel[j]] = value;
        if (record) A.first_oor[ii[j] - A.start] = first[j];
    }
}

/* ROI positions start .. start+n-1: each panel's share of them in turn, in blocks of LANES
   positions of that panel, with its frame (the table row select_panel reads) */
template <int LK, int FM, bool RUNNING>
static void render_range(const Args& launch, int threads)
{
    const long long stop = launch.start + launch.n;
    for (int p = 0; p < launch.P.npanels; ++p) {
        Args A = launch;
        select_panel(A.P, p);
        const long long lo = A.P.pos_begin > A.start ? A.P.pos_begin : A.start;
        const long long end = A.P.pos_end < stop ? A.P.pos_end : stop;
        if (lo >= end) continue;
        const long long blocks = (end - lo + LANES - 1) / LANES;
        /* dynamic: masked or cut blocks cost little, and a row's cost varies with its spots */
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads)
        for (long long b = 0; b < blocks; ++b)
            render_block<LK, FM, RUNNING>(A, lo + b * LANES, end);
    }
}

template <int LK, int FM>
static void dispatch_running(const Args& A, int threads, bool running)
{
    if (running)
        render_range<LK, FM, true>(A, threads);
    else
        render_range<LK, FM, false>(A, threads);
}

template <int LK>
static void dispatch_F(const Args& A, int threads, int fm, bool running)
{
    if (fm == F_INTERPOLATE)
        dispatch_running<LK, F_INTERPOLATE>(A, threads, running);
    else if (fm == F_NEAREST)
        dispatch_running<LK, F_NEAREST>(A, threads, running);
    else
        dispatch_running<LK, F_DEFAULT>(A, threads, running);
}

}  // namespace nbxp_cpu

/*
 * The parameters of nbxp_render (same meaning, same order), then the padded F grid
 * (Hr+2, Kr+2, Lr+2), the number of OpenMP threads and image32: if not null, the image
 * is written there as floats (what the command line writes to disk) and `image` is not
 * touched.  Renders ROI positions start ..
 * start+n-1; with NBXP_INTERPOLATE the switch and the recording work as in nbxp_render.
 */
extern "C" void nbxp_render_cpu(
    real* image, int* first_oor, real* trigger,
    const real* Fgrid, const real* sources, const real* orient,
    const real* frames, const long long* layout, const real* recip, const unsigned char* mask,
    long long start, long long n, long long switch_pixel, int switch_sub, int npanels,
    int oversample, int nsources, int norient,
    int Hr, int Kr, int Lr, int hmin, int kmin, int lmin, int shape, int flags,
    real dmin, real kahn, real Na, real Nb, real Nc, real fudge, real default_F, real I_bg, real scale,
    const real* Fpad, int threads, float* image32)
{
    using namespace nbxp_cpu;
    if (n <= 0 || npanels < 1) return;
    Args A;
    fill_setup(A.P, image, first_oor, trigger, Fgrid, sources, orient, frames, layout, recip, mask, start,
               switch_pixel, switch_sub, npanels, oversample, nsources, norient, Hr, Kr, Lr, hmin, kmin, lmin,
               shape, flags, dmin, kahn, Na, Nb, Nc, fudge, default_F, I_bg, scale);

    A.image = image; A.image32 = image32; A.first_oor = first_oor; A.trigger = trigger; A.Fpad = Fpad;
    A.start = start; A.n = n; A.switch_pixel = switch_pixel; A.switch_sub = switch_sub;
    A.Kp = Kr + 2;
    A.Lp = Lr + 2;
    A.hlo = (real)(hmin - 1); A.klo = (real)(kmin - 1); A.llo = (real)(lmin - 1);
    A.hhi = (real)(hmin + Hr); A.khi = (real)(kmin + Kr); A.lhi = (real)(lmin + Lr);
    A.origin = ((1 - hmin) * A.Kp + (1 - kmin)) * A.Lp + (1 - lmin);

    const int fm = !(flags & NBXP_HKL) ? F_DEFAULT : (flags & NBXP_INTERPOLATE) ? F_INTERPOLATE : F_NEAREST;
    const bool running = (flags & (NBXP_OVERSAMPLE_OMEGA | NBXP_OVERSAMPLE_POLAR | NBXP_OVERSAMPLE_THICK)) != 0;
    if (threads < 1) threads = 1;
    if (shape == NBXP_SHAPE_SQUARE) {
        if (A.P.X.integer_N)
            dispatch_F<L_SQUARE_INTEGER>(A, threads, fm, running);
        else
            dispatch_F<L_SQUARE>(A, threads, fm, running);
    } else if (shape == NBXP_SHAPE_ROUND) {
        dispatch_F<L_ROUND>(A, threads, fm, running);
    } else if (shape == NBXP_SHAPE_GAUSS) {
        dispatch_F<L_GAUSS>(A, threads, fm, running);
    } else {
        dispatch_F<L_TOPHAT>(A, threads, fm, running);
    }
}
