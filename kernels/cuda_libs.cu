/* cuBLAS and cuDNN loaded at run time (dlopen), their handles, error reporting, and the GEMM math mode.
 * See cuda_libs.h. The binary links neither library, so it starts (and the CPU path runs) without them; the
 * first GPU use calls cuda_libs_load(), which names the library that is missing and the file names tried. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_libs.h"
extern "C" {
#include "common.h"
}

V3Libs v3_libs;
static int g_ready = 0;
static V3Math g_math = V3_MATH_FP32;

/* ---- status names ---- */

const char *v3cu_cublas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "unknown cuBLAS status";
}

const char *v3cu_cudnn_status_name(cudnnStatus_t s) {
    if (v3_libs.cudnnGetErrorString_p) {
        const char *m = v3_libs.cudnnGetErrorString_p(s);
        if (m && *m) return m;
    }
    return s == CUDNN_STATUS_SUCCESS ? "CUDNN_STATUS_SUCCESS" : "cuDNN error (no message)";
}

void v3cu_cudnn_fail(const char *file, int line, const char *call, cudnnStatus_t s) {
    char detail[1024];
    detail[0] = 0;
    if (v3_libs.cudnnGetLastErrorString_p) {
        v3_libs.cudnnGetLastErrorString_p(detail, sizeof detail);
        detail[sizeof detail - 1] = 0;
        for (char *p = detail; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    fprintf(stderr, "v3: cuDNN error at %s:%d: %s: %s (status %d)%s%s\n", file, line, call,
            v3cu_cudnn_status_name(s), (int)s, detail[0] ? "; " : "", detail);
    exit(1);
}

void v3cu_cublas_fail(const char *file, int line, const char *call, cublasStatus_t s) {
    fprintf(stderr, "v3: cuBLAS error at %s:%d: %s: %s (status %d)\n", file, line, call, v3cu_cublas_status_name(s),
            (int)s);
    exit(1);
}

/* ---- loading ---- */

/* dlopen the first of names[] that loads. On failure *err receives the most useful dlerror(): one that is not
 * "file not found" (a library that exists but cannot load says more), else the first. */
static void *open_first(const char *const *names, int nnames, int flags, char *tried, size_t ntried, char *err,
                        size_t nerr, const char **which) {
    tried[0] = err[0] = 0;
    int have_interesting = 0;
    for (int i = 0; i < nnames; i++) {
        void *h = dlopen(names[i], flags);
        if (h) {
            *which = names[i];
            return h;
        }
        const char *e = dlerror();
        if (!e) e = "unknown dlopen error";
        size_t len = strlen(tried);
        snprintf(tried + len, ntried - len, "%s%s", len ? ", " : "", names[i]);
        int interesting = !strstr(e, "No such file or directory");
        if (!err[0] || (interesting && !have_interesting)) {
            snprintf(err, nerr, "%s", e);
            have_interesting = interesting;
        }
    }
    return NULL;
}

static void *resolve(void *so, const char *sym, const char *lib, const char *file, int *failed) {
    if (*failed) return NULL;
    (void)dlerror();
    void *p = dlsym(so, sym);
    if (!p) {
        const char *e = dlerror();
        v3_error("cannot load %s: %s has no symbol %s (%s); this build needs %s", lib, file, sym,
                 e ? e : "dlsym returned NULL",
                 strcmp(lib, "cuDNN") ? "cuBLAS 12 or 13" : "cuDNN 9 (legacy convolution API)");
        *failed = 1;
    }
    return p;
}

/* Path of the shared object that defines `sym` (for the log line), or `fallback`. */
static const char *so_path(void *sym, const char *fallback) {
    Dl_info info;
    if (sym && dladdr(sym, &info) && info.dli_fname && *info.dli_fname) return info.dli_fname;
    return fallback;
}

static void unload(void) {
    if (v3_libs.dnn && v3_libs.cudnnDestroy_p) (void)v3_libs.cudnnDestroy_p(v3_libs.dnn);
    if (v3_libs.blas && v3_libs.cublasDestroy_v2_p) (void)v3_libs.cublasDestroy_v2_p(v3_libs.blas);
    if (v3_libs.cudnn_so) dlclose(v3_libs.cudnn_so);
    if (v3_libs.cublas_so) dlclose(v3_libs.cublas_so);
    memset(&v3_libs, 0, sizeof v3_libs);
}

static int load(void) {
    char tried[1024], err[1024];
    const char *which = NULL;
    /* Plain sonames first (the loader's search path: ld.so.conf, LD_LIBRARY_PATH), then the toolkit's usual
     * directory, for machines where /usr/local/cuda/lib64 is not on the search path. */
    static const char *const blas_names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so",
                                             "/usr/local/cuda/lib64/libcublas.so.13",
                                             "/usr/local/cuda/lib64/libcublas.so.12"};
    static const char *const dnn_names[] = {"libcudnn.so.9", "libcudnn.so", "/usr/local/cuda/lib64/libcudnn.so.9",
                                            "/usr/lib/x86_64-linux-gnu/libcudnn.so.9"};

    v3_libs.cublas_so = open_first(blas_names, (int)(sizeof blas_names / sizeof blas_names[0]), RTLD_NOW | RTLD_LOCAL,
                                   tried, sizeof tried, err, sizeof err, &which);
    if (!v3_libs.cublas_so)
        return v3_error("cannot load cuBLAS: dlopen %s failed: %s; install cuBLAS (Debian/Ubuntu package "
                        "libcublas-13-0 from NVIDIA's CUDA repository, or the CUDA toolkit) or add its directory "
                        "to LD_LIBRARY_PATH", tried, err);
    const char *blas_file = which;
    int failed = 0;
#define V3_RESOLVE_BLAS(fn) \
    v3_libs.fn##_p = (decltype(&fn))resolve(v3_libs.cublas_so, #fn, "cuBLAS", blas_file, &failed);
    V3_CUBLAS_FUNCS(V3_RESOLVE_BLAS)
#undef V3_RESOLVE_BLAS
    /* The header's own declaration must match v3_cublasGemmEx_fn (compile-time check, no symbol reference). */
    typedef decltype(static_cast<v3_cublasGemmEx_fn>(&cublasGemmEx)) gemm_ex_checked;
    v3_libs.cublasGemmEx_p = (gemm_ex_checked)resolve(v3_libs.cublas_so, "cublasGemmEx", "cuBLAS", blas_file, &failed);
    if (failed) return -1;

    /* RTLD_GLOBAL: cuDNN 9's libcudnn.so.9 is a shim that loads its sub-libraries (libcudnn_cnn.so.9, ...) */
    v3_libs.cudnn_so = open_first(dnn_names, (int)(sizeof dnn_names / sizeof dnn_names[0]), RTLD_NOW | RTLD_GLOBAL,
                                  tried, sizeof tried, err, sizeof err, &which);
    if (!v3_libs.cudnn_so)
        return v3_error("cannot load cuDNN: dlopen %s failed: %s; install cuDNN 9 (Debian/Ubuntu package "
                        "libcudnn9-cuda-13 from NVIDIA's CUDA repository, or the NVIDIA tarball) or add its "
                        "directory to LD_LIBRARY_PATH", tried, err);
    const char *dnn_file = which;
#define V3_RESOLVE_DNN(fn) \
    v3_libs.fn##_p = (decltype(&fn))resolve(v3_libs.cudnn_so, #fn, "cuDNN", dnn_file, &failed);
    V3_CUDNN_FUNCS(V3_RESOLVE_DNN)
#undef V3_RESOLVE_DNN
    if (failed) return -1;
    (void)dlerror();
    v3_libs.cudnnGetLastErrorString_p =
        (decltype(&cudnnGetLastErrorString))dlsym(v3_libs.cudnn_so, "cudnnGetLastErrorString");
    (void)dlerror();

    /* cuDNN: major version 9 (the enums and the legacy API used here are cuDNN 9's). */
    size_t dv = v3_libs.cudnnGetVersion_p();
    v3_libs.cudnn_version = dv;
    if (dv < 90000 || dv >= 100000)
        return v3_error("cannot use cuDNN: %s is version %zu.%zu.%zu; this build needs cuDNN 9 (built against "
                        "%d.%d.%d)", so_path((void *)v3_libs.cudnnGetVersion_p, dnn_file), dv / 10000,
                        dv % 10000 / 100, dv % 100, CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL);

    /* The handles are bound to the backend's stream, which cuda_init creates. */
    cudaStream_t stream = v3cu_stream();
    if (!stream) return v3_error("cuda_libs_load: the CUDA backend is not initialised (call cuda_init first)");

    cublasStatus_t bs = v3_libs.cublasCreate_v2_p(&v3_libs.blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        v3_libs.blas = NULL;
        return v3_error("cannot use cuBLAS (%s): cublasCreate failed: %s", so_path((void *)v3_libs.cublasCreate_v2_p,
                        blas_file), v3cu_cublas_status_name(bs));
    }
    if ((bs = v3_libs.cublasSetStream_v2_p(v3_libs.blas, stream)) != CUBLAS_STATUS_SUCCESS)
        return v3_error("cuBLAS: cublasSetStream failed: %s", v3cu_cublas_status_name(bs));
    /* Default math: no TF32 or emulation unless a GEMM's compute type asks for it (cublas_linear.cu). */
    if ((bs = v3_libs.cublasSetMathMode_p(v3_libs.blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
        return v3_error("cuBLAS: cublasSetMathMode(CUBLAS_DEFAULT_MATH) failed: %s", v3cu_cublas_status_name(bs));
    int bv = 0;
    if ((bs = v3_libs.cublasGetVersion_v2_p(v3_libs.blas, &bv)) != CUBLAS_STATUS_SUCCESS)
        return v3_error("cuBLAS: cublasGetVersion failed: %s", v3cu_cublas_status_name(bs));
    v3_libs.cublas_version = bv;

    cudnnStatus_t ds = v3_libs.cudnnCreate_p(&v3_libs.dnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        v3_libs.dnn = NULL;
        char detail[512] = "";
        if (v3_libs.cudnnGetLastErrorString_p) v3_libs.cudnnGetLastErrorString_p(detail, sizeof detail);
        detail[sizeof detail - 1] = 0;
        return v3_error("cannot use cuDNN %zu.%zu.%zu (%s): cudnnCreate failed: %s%s%s", dv / 10000, dv % 10000 / 100,
                        dv % 100, so_path((void *)v3_libs.cudnnCreate_p, dnn_file), v3cu_cudnn_status_name(ds),
                        detail[0] ? "; " : "", detail);
    }
    if ((ds = v3_libs.cudnnSetStream_p(v3_libs.dnn, stream)) != CUDNN_STATUS_SUCCESS)
        return v3_error("cuDNN: cudnnSetStream failed: %s", v3cu_cudnn_status_name(ds));

    size_t crt = v3_libs.cudnnGetCudartVersion_p();
    v3_log("cuBLAS %d.%d.%d (%s), cuDNN %zu.%zu.%zu for CUDA %zu.%zu (%s)", bv / 10000, bv % 10000 / 100, bv % 100,
           so_path((void *)v3_libs.cublasCreate_v2_p, blas_file), dv / 10000, dv % 10000 / 100, dv % 100, crt / 1000,
           crt % 1000 / 10, so_path((void *)v3_libs.cudnnCreate_p, dnn_file));
    return 0;
}

extern "C" int cuda_libs_load(void) {
    if (g_ready) return 0;
    if (load()) {
        unload();
        return -1;
    }
    g_ready = 1;
    return 0;
}

int v3cu_libs_ready(void) { return g_ready; }

void v3cu_libs_require(const char *what) {
    if (g_ready) return;
    if (cuda_libs_load()) {
        fprintf(stderr, "v3: %s: %s\n", what, v3_last_error());
        exit(1);
    }
}

extern "C" void cuda_set_math(V3Math m) {
    if (m != V3_MATH_FP32 && m != V3_MATH_TF32 && m != V3_MATH_BF16) V3_FATAL("cuda_set_math: bad mode %d", (int)m);
    g_math = m;
}

extern "C" V3Math cuda_get_math(void) { return g_math; }
