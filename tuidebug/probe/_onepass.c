/* One-pass statistics of a float32 CPU tensor, for the layer sampler (statbuffer.py).
 *
 * Why this file exists: inside a forward hook a torch reduction of a 128x256 output costs
 * 25-30 us (Python binding, dispatcher, TensorIterator, waking the intra-op threads, and the
 * first read of an output the matmul's threads left in the other core's cache), and the
 * sampler needs four of them per output (sum, L2 norm, min, max) plus a count of exact zeros.
 * One pass over the same 32,768 floats here takes 5-8 us, call included. torch offers no fused
 * reduction of this kind without compiling one (docs/layers.md has the measurements).
 *
 * The build is optional (setup.py): without a C compiler the package installs without this
 * module and the sampler uses torch's reductions, with the same results up to rounding.
 *
 * Numerics: within a block of BLOCK elements each of LANES lanes accumulates 64 values in
 * float; the blocks are added in double (more accurate than a float32 torch.sum). Min and max
 * ignore NaN in the loop; a NaN anywhere makes the sum of squares NaN, and then both are NaN,
 * as torch.aminmax reports. Independent lanes let the compiler vectorise without -ffast-math
 * (which would break NaN and inf handling). The loops walk a row pointer, not x[i + k]:
 * Python's CFLAGS carry -fwrapv, under which GCC 12 could not vectorise the indexed form
 * (l2_norm measured 8x slower).
 *
 * `./dev test` (pip install -e .) rebuilds it after a change.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define LANES 16
#define BLOCK 1024 /* a multiple of LANES */

/* On x86-64 ELF the functions below are compiled twice, for AVX2 and the SSE2 baseline, and
 * the loader picks one for the CPU it runs on (GCC/Clang function multiversioning). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MULTIVERSION
#define MULTIVERSION
#endif

/* out[0..3] = sum, L2 norm, min, max of x[0..n); returns the count of exact zeros. */
MULTIVERSION
static int64_t one_pass(const float *x, int64_t n, float *out)
{
    double total = 0.0, squares = 0.0, zeros = 0.0;
    float lo[LANES], hi[LANES];
    for (int k = 0; k < LANES; k++) {
        lo[k] = INFINITY;
        hi[k] = -INFINITY;
    }
    int64_t i = 0;
    while (n - i >= LANES) {
        float s[LANES] = {0}, q[LANES] = {0}, z[LANES] = {0};
        int64_t rows = (n - i >= BLOCK ? BLOCK : n - i) / LANES;
        for (const float *row = x + i; rows > 0; rows--, row += LANES, i += LANES) {
            for (int k = 0; k < LANES; k++) {
                float v = row[k];
                s[k] += v;
                q[k] += v * v;
                lo[k] = v < lo[k] ? v : lo[k];
                hi[k] = v > hi[k] ? v : hi[k];
                z[k] += v == 0.0f ? 1.0f : 0.0f;
            }
        }
        for (int k = 0; k < LANES; k++) {
            total += s[k];
            squares += q[k];
            zeros += z[k];
        }
    }
    float min = lo[0], max = hi[0];
    for (int k = 1; k < LANES; k++) {
        min = lo[k] < min ? lo[k] : min;
        max = hi[k] > max ? hi[k] : max;
    }
    for (; i < n; i++) {
        float v = x[i];
        total += v;
        squares += (double)v * v;
        zeros += v == 0.0f;
        min = v < min ? v : min;
        max = v > max ? v : max;
    }
    if (squares != squares) { /* a NaN in the data */
        min = NAN;
        max = NAN;
    }
    out[0] = (float)total;
    out[1] = (float)sqrt(squares);
    out[2] = min;
    out[3] = max;
    return (int64_t)zeros;
}

/* *out = L2 norm of x[0..n). */
MULTIVERSION
static void l2_norm(const float *x, int64_t n, float *out)
{
    double squares = 0.0;
    int64_t i = 0;
    while (n - i >= LANES) {
        float q[LANES] = {0};
        int64_t rows = (n - i >= BLOCK ? BLOCK : n - i) / LANES;
        for (const float *row = x + i; rows > 0; rows--, row += LANES, i += LANES) {
            for (int k = 0; k < LANES; k++) {
                float v = row[k];
                q[k] += v * v;
            }
        }
        for (int k = 0; k < LANES; k++) {
            squares += q[k];
        }
    }
    for (; i < n; i++) {
        squares += (double)x[i] * x[i];
    }
    *out = (float)sqrt(squares);
}

/* The sum of x[0..n) in double: non-finite only when a value is (float32 values cannot
 * overflow a double sum). */
MULTIVERSION
static double sum(const float *x, int64_t n)
{
    double lanes[4] = {0};
    int64_t i = 0;
    for (const float *row = x; n - i >= 4; row += 4, i += 4) {
        for (int k = 0; k < 4; k++) {
            lanes[k] += row[k];
        }
    }
    double total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; i++) {
        total += x[i];
    }
    return total;
}

/* The arguments of stats and norm: (address of the data, element count, address of out). */
static int parse(PyObject *const *args, Py_ssize_t nargs, const char *usage, const float **x,
                 int64_t *n, float **out)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s takes 3 arguments", usage);
        return -1;
    }
    *x = (const float *)PyLong_AsVoidPtr(args[0]);
    long long count = PyLong_AsLongLong(args[1]);
    *out = (float *)PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (count < 0 || (count > 0 && *x == NULL) || *out == NULL) {
        PyErr_Format(PyExc_ValueError, "%s: null address or negative count", usage);
        return -1;
    }
    *n = (int64_t)count;
    return 0;
}

static PyObject *py_stats(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const float *x;
    int64_t n;
    float *out;
    (void)module;
    if (parse(args, nargs, "stats(data_ptr, numel, out_ptr)", &x, &n, &out) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong((long long)one_pass(x, n, out));
}

static PyObject *py_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const float *x;
    int64_t n;
    float *out;
    (void)module;
    if (parse(args, nargs, "norm(data_ptr, numel, out_ptr)", &x, &n, &out) < 0) {
        return NULL;
    }
    l2_norm(x, n, out);
    Py_RETURN_NONE;
}

static PyObject *py_total(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "total(data_ptr, numel) takes 2 arguments");
        return NULL;
    }
    const float *x = (const float *)PyLong_AsVoidPtr(args[0]);
    long long count = PyLong_AsLongLong(args[1]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (count < 0 || (count > 0 && x == NULL)) {
        PyErr_SetString(PyExc_ValueError, "total(data_ptr, numel): null address or negative count");
        return NULL;
    }
    return PyFloat_FromDouble(sum(x, (int64_t)count));
}

static PyMethodDef methods[] = {
    {"stats", (PyCFunction)(void (*)(void))py_stats, METH_FASTCALL,
     "stats(data_ptr, numel, out_ptr) -> zeros\n\n"
     "Write sum, L2 norm, min and max of numel float32 values at data_ptr to the four floats\n"
     "at out_ptr; return how many values are exactly zero. The caller guarantees the\n"
     "addresses (a contiguous float32 CPU tensor and a float32 buffer it holds)."},
    {"norm", (PyCFunction)(void (*)(void))py_norm, METH_FASTCALL,
     "norm(data_ptr, numel, out_ptr) -> None\n\n"
     "Write the L2 norm of numel float32 values at data_ptr to the float at out_ptr."},
    {"total", (PyCFunction)(void (*)(void))py_total, METH_FASTCALL,
     "total(data_ptr, numel) -> float\n\n"
     "The sum of numel float32 values at data_ptr, accumulated in double."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_onepass",
    "One-pass float32 statistics for the layer sampler (see statbuffer.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__onepass(void)
{
    return PyModule_Create(&module_def);
}
