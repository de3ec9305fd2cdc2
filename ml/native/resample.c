/* Pillow's bilinear resize of an 8-bit RGB image, the same pixels to the bit, in loops a compiler vectorises.

   `Image.resize(size, Image.BILINEAR)` is the model's input resize (ml/images.py). Pillow runs it as two
   passes of integer convolution (src/libImaging/Resample.c): a horizontal one into an 8-bit image, then a
   vertical one. Its horizontal pass walks each output pixel's few input pixels one by one, which no compiler
   turns into SIMD, and it cost the embedding pipeline a millisecond an image, more than decoding the JPEG.

   Here each pass is a sum of whole rows: the image is transposed first, so that the horizontal pass also adds
   contiguous rows (of the transposed image), and transposed back before the vertical pass. The coefficients,
   their rounding to 22-bit integers, the order of the passes and the rounding between them are Pillow's, and
   integer sums do not depend on the order they are added in, so every output byte is Pillow's
   (tests/ml/test_resample.py checks it on the sample catalogue and on random sizes).

   Built by `make deps` (Makefile) into libresample.so beside this file; ml/resample.py loads it and falls back
   to Pillow when it is missing. target_clones: an AVX2 build for the machines that have it, picked at load
   time, and a baseline one for the rest. A thread keeps its buffers between calls and frees them when it ends. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2) /* Pillow's: 8 bits of result, 2 of headroom */
#define HALF (1 << (PRECISION_BITS - 1))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTORISED __attribute__((target_clones("avx2", "default")))
#else
#define VECTORISED
#endif

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs (whole image as the box, bilinear filter) followed by normalize_coeffs_8bpc.
   Fills bounds[2 * out_size] (first input index, count) and kk[out_size * ksize]; returns ksize, 0 on failure. */
static int coefficients(int in_size, int out_size, int *bounds, int32_t **kk_out) {
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *k = malloc((size_t)ksize * sizeof(double));
    int32_t *kk = malloc((size_t)out_size * ksize * sizeof(int32_t));
    if (!k || !kk) {
        free(k);
        free(kk);
        return 0;
    }
    double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * inv_filterscale);
            k[x] = w;
            ww += w;
        }
        if (ww != 0.0)
            for (x = 0; x < xmax; x++) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        for (x = 0; x < ksize; x++) /* bilinear weights are never negative */
            kk[xx * ksize + x] = (int32_t)(0.5 + k[x] * (1 << PRECISION_BITS));
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    free(k);
    *kk_out = kk;
    return ksize;
}

/* dst[c][r] = src[r][c]: src has `rows` lines of `cols` pixels of `pixel_bytes` (3: RGB; 4: Pillow's own RGBX,
   the 4th byte unused) `src_line` bytes apart; dst gets `cols` lines of `rows` RGB pixels `dst_line` bytes apart.
   src is read line after line, as the hardware prefetches it: the callers keep the other side to a strip of
   STRIP lines, which stays in the cache. (Tiles read src in short runs and took twice as long on a photo not in
   the cache.) */
static void transpose_pixels(const uint8_t *src, int pixel_bytes, size_t src_line, int rows, int cols, uint8_t *dst,
                             size_t dst_line) {
    for (int r = 0; r < rows; r++) {
        const uint8_t *line = src + (size_t)r * src_line;
        uint8_t *d = dst + (size_t)r * 3;
        for (int c = 0; c < cols; c++) {
            const uint8_t *p = line + (size_t)c * pixel_bytes;
            uint8_t *q = d + (size_t)c * dst_line;
            q[0] = p[0];
            q[1] = p[1];
            q[2] = p[2];
        }
    }
}

/* One pass of Pillow's convolution with every output line a weighted sum of whole input lines:
   out[o][j] = clip8(HALF + sum_t in[bounds[2o] + t][j] * kk[o * ksize + t]) for j < width bytes.
   The sums run over CHUNK bytes at a time, which the compiler keeps in vector registers across the taps. */
VECTORISED
static void weighted_rows(const uint8_t *in, int width, int out_lines, const int *bounds, const int32_t *kk,
                          int ksize, uint8_t *out) {
    enum { CHUNK = 64 };
    for (int o = 0; o < out_lines; o++) {
        int first = bounds[o * 2], count = bounds[o * 2 + 1];
        const int32_t *k = kk + (size_t)o * ksize;
        const uint8_t *top = in + (size_t)first * width;
        uint8_t *dst = out + (size_t)o * width;
        int j0 = 0;
        for (; j0 + CHUNK <= width; j0 += CHUNK) {
            int32_t acc[CHUNK];
            for (int j = 0; j < CHUNK; j++) acc[j] = HALF;
            for (int t = 0; t < count; t++) {
                const uint8_t *line = top + (size_t)t * width + j0;
                int32_t w = k[t];
                for (int j = 0; j < CHUNK; j++) acc[j] += (int32_t)line[j] * w;
            }
            for (int j = 0; j < CHUNK; j++) {
                int32_t v = acc[j] >> PRECISION_BITS; /* Pillow's clip8 */
                dst[j0 + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        for (int j = j0; j < width; j++) { /* the last bytes of the line */
            int32_t acc = HALF;
            for (int t = 0; t < count; t++) acc += (int32_t)top[(size_t)t * width + j] * k[t];
            int32_t v = acc >> PRECISION_BITS;
            dst[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

enum { STRIP = 64 }; /* input lines the horizontal pass takes at a time */

/* Pillow's horizontal pass over `rows` lines of in_w pixels (pixel_bytes each, lines in_line bytes apart) into
   `out` (rows lines of out_w RGB pixels), as sums of whole lines of the transposed image. STRIP lines at a time,
   so that the transposed strips (`transposed`: in_w * STRIP pixels, `horizontal`: out_w * STRIP) stay in the
   cache. */
static void horizontal_pass(const uint8_t *in, int pixel_bytes, size_t in_line, int rows, int in_w, int out_w,
                            const int *bounds, const int32_t *kk, int ksize, uint8_t *transposed,
                            uint8_t *horizontal, uint8_t *out) {
    for (int r0 = 0; r0 < rows; r0 += STRIP) {
        int n = rows - r0 < STRIP ? rows - r0 : STRIP;
        transpose_pixels(in + (size_t)r0 * in_line, pixel_bytes, in_line, n, in_w, transposed, (size_t)n * 3);
        weighted_rows(transposed, n * 3, out_w, bounds, kk, ksize, horizontal);
        transpose_pixels(horizontal, 3, (size_t)n * 3, out_w, n, out + (size_t)r0 * out_w * 3, (size_t)out_w * 3);
    }
}

/* The images between the passes, kept from one call to the next in each thread: allocating them afresh (half a
   megabyte for a catalogue photo) cost as much as the passes, the kernel mapping and zeroing new pages each time.
   A thread keeps KEEP_BYTES (only the pages it has used are resident), freed when the thread ends (the
   pipeline's decoder is a new thread for each task); a bigger image gets a buffer of its own, freed at once. */
enum { KEEP_BYTES = 8 << 20 };
static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;

static void make_kept_key(void) { pthread_key_create(&kept_key, free); }

/* A buffer of `bytes`; *own says whether the caller frees it (not the thread's kept one). */
static uint8_t *scratch(size_t bytes, int *own) {
    *own = 1;
    if (bytes > KEEP_BYTES) return malloc(bytes);
    pthread_once(&kept_once, make_kept_key);
    uint8_t *kept = pthread_getspecific(kept_key);
    if (!kept) {
        kept = malloc(KEEP_BYTES);
        if (!kept || pthread_setspecific(kept_key, kept) != 0) {
            free(kept);
            return malloc(bytes);
        }
    }
    *own = 0;
    return kept;
}

/* Resizes `in` (in_h lines of in_w pixels of pixel_bytes, 3 for packed RGB or 4 for Pillow's RGBX, lines
   back to back) to `out` (out_h x out_w x 3, packed). Returns 0, or -1 when memory runs out. */
int resample_bilinear_rgb(const uint8_t *in, int pixel_bytes, int in_h, int in_w, uint8_t *out, int out_h,
                          int out_w) {
    int ret = -1;
    int *bounds_v = malloc((size_t)out_h * 2 * sizeof(int)), *bounds_h = malloc((size_t)out_w * 2 * sizeof(int));
    int32_t *kk_v = NULL, *kk_h = NULL;
    uint8_t *buffer = NULL;
    int own_buffer = 0;
    if (!bounds_v || !bounds_h || (pixel_bytes != 3 && pixel_bytes != 4)) goto done;
    int ksize_v = coefficients(in_h, out_h, bounds_v, &kk_v);
    int ksize_h = coefficients(in_w, out_w, bounds_h, &kk_h);
    if (!ksize_v || !ksize_h) goto done;
    /* Pillow 13's rule for the order (ImagingResampleInner): the vertical pass first when the height shrinks
       by more than twice as many pixels as the width */
    int horizontal_first = !((in_h - out_h) > 0 && (in_h - out_h) > (in_w - out_w) * 2);
    int need_horizontal = out_w != in_w;
    int vertical_reads_input = !horizontal_first || !need_horizontal; /* of packed RGB lines */
    size_t in_line = (size_t)in_w * pixel_bytes;

    size_t widest = (size_t)(in_w > out_w ? in_w : out_w);
    size_t strips = widest * STRIP * 3, between = (size_t)in_h * widest * 3;
    size_t packed = vertical_reads_input && pixel_bytes != 3 ? (size_t)in_h * in_w * 3 : 0;
    buffer = scratch(2 * strips + between + packed, &own_buffer);
    if (!buffer) goto done;
    uint8_t *transposed = buffer, *horizontal = buffer + strips, *image = buffer + 2 * strips;
    const uint8_t *rgb = in;
    if (packed) { /* the vertical pass adds whole lines of packed RGB */
        uint8_t *p = image + between;
        for (size_t i = 0; i < (size_t)in_h * in_w; i++) memcpy(p + i * 3, in + i * 4, 3);
        rgb = p;
    }

    if (!need_horizontal) {
        weighted_rows(rgb, in_w * 3, out_h, bounds_v, kk_v, ksize_v, out);
    } else if (horizontal_first) {
        /* only the input lines the vertical pass reads (Pillow's ybox_first, ybox_last) */
        int first_row = bounds_v[0];
        int rows = bounds_v[out_h * 2 - 2] + bounds_v[out_h * 2 - 1] - first_row;
        const uint8_t *top = in + (size_t)first_row * in_line;
        int need_vertical = out_h != in_h; /* at the same height the lines read are all of them, as they are */
        horizontal_pass(top, pixel_bytes, in_line, rows, in_w, out_w, bounds_h, kk_h, ksize_h, transposed,
                        horizontal, need_vertical ? image : out);
        if (need_vertical) {
            for (int i = 0; i < out_h; i++) bounds_v[i * 2] -= first_row;
            weighted_rows(image, out_w * 3, out_h, bounds_v, kk_v, ksize_v, out);
        }
    } else { /* the height shrinks first */
        weighted_rows(rgb, in_w * 3, out_h, bounds_v, kk_v, ksize_v, image);
        horizontal_pass(image, 3, (size_t)in_w * 3, out_h, in_w, out_w, bounds_h, kk_h, ksize_h, transposed,
                        horizontal, out);
    }
    ret = 0;
done:
    free(bounds_v);
    free(bounds_h);
    free(kk_v);
    free(kk_h);
    if (own_buffer) free(buffer);
    return ret;
}
