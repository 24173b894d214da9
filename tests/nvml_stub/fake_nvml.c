/*
 * fake_nvml.c - a stand-in libnvidia-ml.so.1 for tests on machines without an NVIDIA GPU.
 *
 * The real pynvml (nvidia-ml-py) loads this library by its soname and calls it exactly as it
 * calls NVIDIA's: same symbols, same struct layouts, same error codes, same "insufficient size"
 * two-call protocol. What the library reports comes from a plain-text STATE FILE named by the
 * environment variable DS01_FAKE_NVML_STATE. The file is re-read whenever its path, inode, size
 * or mtime changes, so a test can change the host under a long-lived process that initialised
 * NVML once. Write it atomically (temporary file + rename), as tests/fixtures/nvml.py does.
 *
 * Build (tests/nvml_stub/build.py does this):
 *   gcc -O2 -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c -lpthread
 *
 * STATE FILE FORMAT - one directive per line; '#' starts a comment line; fields separated by
 * blanks; sizes in bytes; "na" where noted means "not available".
 *
 *   driver <version>
 *       Driver version string (default 550.54.15).
 *   gpu <index> <uuid> <mem_total> <mem_used> <util_percent|na> <mig 0|1|na> <name ...>
 *       A physical GPU. Indexes must be 0..N-1 (any order). util "na": the GPU does not report
 *       utilization (NOT_SUPPORTED). mig: 1 = MIG mode enabled, 0 = disabled, na = GPU is not
 *       MIG-capable (nvmlDeviceGetMigMode returns NOT_SUPPORTED). The name is the rest of the line
 *       and may contain spaces.
 *   mig <gpu_index> <mig_index> <uuid> <gi_id> <ci_id> <mem_total> <mem_used> <profile ...>
 *       A MIG device under a GPU that has mig 1. mig_index 0..6 (slots may be sparse: an empty
 *       slot answers NOT_FOUND, as on real hardware). Its name is "<gpu name> MIG <profile>".
 *       nvmlDeviceGetAttributes on its handle reads the slice counts from the profile, as NVIDIA
 *       names them: "3g.40gb" is 3 GPU-instance and 3 compute-instance slices, "1c.3g.40gb" 3 and 1.
 *   reserved <device_uuid> <bytes>
 *       Memory the driver reserves on a GPU or MIG device (default 0). As on real drivers (R510+),
 *       nvmlDeviceGetMemoryInfo_v2 reports it as "reserved" with "used" = the mem_used of the gpu/mig
 *       line, while v1 has no such field and reports used = mem_used + reserved (an idle H200 on
 *       driver 580: v1 used 644939776, v2 reserved 644939776 and used 0). free = total - both.
 *   proc <device_uuid> <pid> <used_mem|na>
 *       A compute process on a full GPU or on a MIG device. "na" is reported as
 *       NVML_VALUE_NOT_AVAILABLE (0xFFFFFFFFFFFFFFFF). A GPU in MIG mode lists, as real NVML does,
 *       the processes of all its MIG devices (with their GPU/compute instance ids) on its own handle.
 *       Listed by the compute calls (nvmlDeviceGetComputeRunningProcesses*, and
 *       nvmlDeviceGetRunningProcessDetailList in compute mode) only.
 *   gproc <gpu_uuid> <pid> <used_mem|na>
 *       A graphics process (an X server, an EGL or Vulkan renderer) on a full GPU: listed by the
 *       graphics calls (nvmlDeviceGetGraphicsRunningProcesses*, and the detail list in graphics
 *       mode) only. A process with both kinds of context (nvidia-smi's "C+G") has a proc and a
 *       gproc line with the same pid. MIG devices run no graphics: a gproc on one is an error, and
 *       the graphics calls on a MIG device handle return NOT_SUPPORTED.
 *   usample <gpu_uuid> <timestamp_us> <value>
 *       One entry of a GPU's utilisation sample buffer (NVML_GPU_UTILIZATION_SAMPLES), returned by
 *       nvmlDeviceGetSamples to a caller whose last seen timestamp is older, in file order, as
 *       unsigned ints (any value: a driver's out-of-range one too). A GPU with no sample newer than
 *       the caller's answers NVML_ERROR_NOT_FOUND (an idle GPU's buffer runs dry), one that does not
 *       report utilisation (util na, MIG mode, a MIG device) NVML_ERROR_NOT_SUPPORTED.
 *   fail init [code]
 *       nvmlInit, nvmlInit_v2 and nvmlInitWithFlags return <code> (default 9,
 *       NVML_ERROR_DRIVER_NOT_LOADED). Calls made after a successful init are not affected.
 *   fail <function> <code> [device_uuid]
 *       <function> returns <code>. <function> is an exact symbol name, or a base name that also
 *       matches its versioned symbols (nvmlDeviceGetComputeRunningProcesses matches _v2 and _v3).
 *       With a device_uuid, only calls on that device (GPU or MIG UUID) fail.
 *   hang <function> <seconds> [device_uuid]
 *       <function> blocks for <seconds>, or until the rule disappears from the state file, before
 *       answering normally (simulates a wedged driver). The lock is not held while blocking.
 *
 * A missing or unset state file makes nvmlInit fail with NVML_ERROR_DRIVER_NOT_LOADED. A
 * malformed state file makes every call fail with NVML_ERROR_UNKNOWN and prints the file, line
 * and problem on stderr (tests should never produce one).
 *
 * Choices where NVIDIA's documentation is silent: nvmlDeviceGetIndex, nvmlDeviceGetMigMode and
 * nvmlDeviceGetUtilizationRates on a MIG device handle return NOT_SUPPORTED; utilization of a GPU
 * in MIG mode is NOT_SUPPORTED (as on A100/H100). Handles stay valid across reloads; a handle whose
 * GPU vanished from the state answers NVML_ERROR_GPU_IS_LOST, a vanished MIG device
 * NVML_ERROR_INVALID_ARGUMENT. Calls are serialised by one mutex. nvmlInit/nvmlShutdown are
 * reference-counted like the real library.
 *
 * While initialised, the library holds "<state file>.dev" open, as NVIDIA's holds the GPUs' device
 * nodes: a stand-in for `nvidia-smi -r` can refuse, as the real one does, a GPU that another NVML
 * client (a monitoring daemon) has open. The last nvmlShutdown closes it.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- NVML ABI (subset) ---------------------------------------------------------------------- */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define NVML_VALUE_NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFULL
#define NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFU

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;
#define NVML_STRUCT_VERSION(size, ver) ((unsigned int)(size) | ((unsigned int)(ver) << 24U))
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2)

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount;
    unsigned int sharedDecoderCount;
    unsigned int sharedEncoderCount;
    unsigned int sharedJpegCount;
    unsigned int sharedOfaCount;
    unsigned int gpuInstanceSliceCount;
    unsigned int computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

/* The plain (v1) symbol's struct, kept for callers built against old headers. */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

/* _v2 and _v3 share this layout. */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
    unsigned long long usedGpuCcProtectedMemory;
} nvmlProcessDetail_v1_t;

typedef struct {
    unsigned int version;
    unsigned int mode;
    unsigned int numProcArrayEntries;
    nvmlProcessDetail_v1_t *procArray;
} nvmlProcessDetailList_v1_t;
#define nvmlProcessDetailList_v1 NVML_STRUCT_VERSION(sizeof(nvmlProcessDetailList_v1_t), 1)
#define NVML_PROCESS_MODE_COMPUTE 0
#define NVML_PROCESS_MODE_GRAPHICS 1

/* ---- Fake host state -------------------------------------------------------------------------- */

#define MAX_GPUS 64
#define MAX_MIG 7 /* MIG devices per GPU on A100/H100 */
#define MAX_PROCS 4096
#define MAX_RULES 64
#define UUID_LEN 96
#define NAME_LEN 96

typedef struct {
    int present;
    char uuid[UUID_LEN];
    char name[NAME_LEN];
    unsigned long long mem_total, mem_used, mem_reserved;
    int util; /* -1: not supported */
    int mig;  /* -1: not MIG-capable, 0: disabled, 1: enabled */
} fake_gpu;

typedef struct {
    int present;
    char uuid[UUID_LEN];
    char profile[32];
    unsigned int gi, ci;
    unsigned long long mem_total, mem_used, mem_reserved;
} fake_mig;

typedef struct {
    unsigned int gpu;
    int mig; /* -1: on the full GPU */
    unsigned int pid;
    unsigned long long used;
    int graphics; /* 1: a graphics context (gproc), 0: a compute one (proc) */
} fake_proc;

#define MAX_SAMPLES 1024
typedef struct {
    char uuid[UUID_LEN];
    unsigned long long ts;
    unsigned int value;
} fake_sample;

typedef struct {
    char fn[80];
    char uuid[UUID_LEN]; /* "" = any device */
    int code;            /* for fail */
    double hang_s;       /* > 0 for hang */
} fake_rule;

typedef struct {
    int valid;
    nvmlReturn_t invalid_code;
    char driver[80];
    int init_fail_code; /* 0 = init succeeds */
    unsigned int ngpus;
    fake_gpu gpus[MAX_GPUS];
    fake_mig migs[MAX_GPUS][MAX_MIG];
    unsigned int nprocs;
    fake_proc procs[MAX_PROCS];
    unsigned int nrules;
    fake_rule rules[MAX_RULES];
    unsigned int nsamples;
    fake_sample samples[MAX_SAMPLES];
} fake_state;

/* A handle names a position, not a state entry, so it stays valid across reloads. */
typedef struct fake_handle {
    int is_mig;
    unsigned int gpu;
    unsigned int mig;
} fake_handle;
typedef fake_handle *nvmlDevice_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static fake_state g_state;
static fake_state g_parse; /* scratch for parsing, swapped in on success */
static int g_init_count;
static int g_dev_fd = -1; /* "<state file>.dev", open while initialised */
static fake_handle g_gpu_handles[MAX_GPUS];
static fake_handle g_mig_handles[MAX_GPUS][MAX_MIG];

/* Identity of the file the current state was read from. */
static char g_loaded_path[4096];
static int g_loaded; /* 0: nothing read yet */
static dev_t g_loaded_dev;
static ino_t g_loaded_ino;
static off_t g_loaded_size;
static struct timespec g_loaded_mtime;

__attribute__((constructor)) static void fake_nvml_setup(void) {
    for (unsigned int g = 0; g < MAX_GPUS; g++) {
        g_gpu_handles[g].is_mig = 0;
        g_gpu_handles[g].gpu = g;
        for (unsigned int m = 0; m < MAX_MIG; m++) {
            g_mig_handles[g][m].is_mig = 1;
            g_mig_handles[g][m].gpu = g;
            g_mig_handles[g][m].mig = m;
        }
    }
    g_state.valid = 0;
    g_state.invalid_code = NVML_ERROR_DRIVER_NOT_LOADED;
}

static void set_missing(void) {
    memset(&g_state, 0, sizeof(g_state));
    g_state.valid = 0;
    g_state.invalid_code = NVML_ERROR_DRIVER_NOT_LOADED;
}

static int parse_error(const char *path, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fake_nvml: %s:%d: ", path, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

static int parse_ull(const char *tok, unsigned long long *out, int allow_na) {
    char *end;
    if (tok == NULL)
        return -1;
    if (allow_na && strcmp(tok, "na") == 0) {
        *out = NVML_VALUE_NOT_AVAILABLE_ULL;
        return 0;
    }
    errno = 0;
    *out = strtoull(tok, &end, 10);
    if (errno != 0 || *end != '\0' || tok[0] == '-')
        return -1;
    return 0;
}

static int parse_uint(const char *tok, unsigned int *out) {
    unsigned long long v;
    if (parse_ull(tok, &v, 0) != 0 || v > 0xFFFFFFFFULL)
        return -1;
    *out = (unsigned int)v;
    return 0;
}

/* Returns a pointer to the rest of the line after skipping n blank-separated fields. */
static char *rest_after_fields(char *line, int n) {
    char *p = line;
    for (int i = 0; i < n; i++) {
        while (*p == ' ' || *p == '\t')
            p++;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static int find_device_uuid(const fake_state *s, const char *uuid, unsigned int *gpu, int *mig) {
    for (unsigned int g = 0; g < s->ngpus; g++) {
        if (strcmp(s->gpus[g].uuid, uuid) == 0) {
            *gpu = g;
            *mig = -1;
            return 0;
        }
        for (unsigned int m = 0; m < MAX_MIG; m++) {
            if (s->migs[g][m].present && strcmp(s->migs[g][m].uuid, uuid) == 0) {
                *gpu = g;
                *mig = (int)m;
                return 0;
            }
        }
    }
    return -1;
}

static int copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

/* Parses path into g_parse. Returns 0 on success. */
static int parse_state(const char *path) {
    FILE *f = fopen(path, "r");
    char buf[1024];
    int lineno = 0;
    /* proc lines name devices that may be declared later: resolve them after the first pass. */
    static char proc_uuid[MAX_PROCS][UUID_LEN];
    static char reserved_uuid[MAX_GPUS * (MAX_MIG + 1)][UUID_LEN];
    static unsigned long long reserved_bytes[MAX_GPUS * (MAX_MIG + 1)];
    unsigned int nreserved = 0;
    unsigned int gpu_lines = 0;

    if (f == NULL)
        return 1; /* vanished between stat and open: treated as missing */
    memset(&g_parse, 0, sizeof(g_parse));
    strcpy(g_parse.driver, "550.54.15");

    while (fgets(buf, sizeof(buf), f) != NULL) {
        char line[1024];
        char *save = NULL;
        char *kw;
        size_t len;
        lineno++;
        len = strlen(buf);
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        else if (!feof(f))
            return fclose(f), parse_error(path, lineno, "line too long");
        memcpy(line, buf, len + 1);
        kw = strtok_r(buf, " \t", &save);
        if (kw == NULL || kw[0] == '#')
            continue;

        if (strcmp(kw, "driver") == 0) {
            char *v = strtok_r(NULL, " \t", &save);
            if (v == NULL || copy_str(g_parse.driver, sizeof(g_parse.driver), v) != 0)
                return fclose(f), parse_error(path, lineno, "driver: expected a version");
        } else if (strcmp(kw, "gpu") == 0) {
            unsigned int idx;
            fake_gpu gpu;
            char *tok_idx = strtok_r(NULL, " \t", &save);
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            char *tok_total = strtok_r(NULL, " \t", &save);
            char *tok_used = strtok_r(NULL, " \t", &save);
            char *tok_util = strtok_r(NULL, " \t", &save);
            char *tok_mig = strtok_r(NULL, " \t", &save);
            char *name = rest_after_fields(line, 7);
            memset(&gpu, 0, sizeof(gpu));
            if (parse_uint(tok_idx, &idx) != 0 || idx >= MAX_GPUS)
                return fclose(f), parse_error(path, lineno, "gpu: bad index (0..%d)", MAX_GPUS - 1);
            if (tok_uuid == NULL || copy_str(gpu.uuid, sizeof(gpu.uuid), tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "gpu: bad uuid");
            if (parse_ull(tok_total, &gpu.mem_total, 0) != 0 || parse_ull(tok_used, &gpu.mem_used, 0) != 0)
                return fclose(f), parse_error(path, lineno, "gpu: bad memory total/used");
            if (tok_util != NULL && strcmp(tok_util, "na") == 0) {
                gpu.util = -1;
            } else {
                unsigned int u;
                if (parse_uint(tok_util, &u) != 0 || u > 100)
                    return fclose(f), parse_error(path, lineno, "gpu: bad utilization (0..100 or na)");
                gpu.util = (int)u;
            }
            if (tok_mig == NULL)
                return fclose(f), parse_error(path, lineno, "gpu: missing mig field");
            if (strcmp(tok_mig, "na") == 0)
                gpu.mig = -1;
            else if (strcmp(tok_mig, "0") == 0 || strcmp(tok_mig, "1") == 0)
                gpu.mig = tok_mig[0] - '0';
            else
                return fclose(f), parse_error(path, lineno, "gpu: mig must be 0, 1 or na");
            if (copy_str(gpu.name, sizeof(gpu.name), name) != 0)
                return fclose(f), parse_error(path, lineno, "gpu: missing or too long name");
            if (g_parse.gpus[idx].present)
                return fclose(f), parse_error(path, lineno, "gpu: index %u declared twice", idx);
            gpu.present = 1;
            g_parse.gpus[idx] = gpu;
            gpu_lines++;
        } else if (strcmp(kw, "mig") == 0) {
            unsigned int g, m;
            fake_mig mig;
            char *tok_g = strtok_r(NULL, " \t", &save);
            char *tok_m = strtok_r(NULL, " \t", &save);
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            char *tok_gi = strtok_r(NULL, " \t", &save);
            char *tok_ci = strtok_r(NULL, " \t", &save);
            char *tok_total = strtok_r(NULL, " \t", &save);
            char *tok_used = strtok_r(NULL, " \t", &save);
            char *profile = rest_after_fields(line, 8);
            memset(&mig, 0, sizeof(mig));
            if (parse_uint(tok_g, &g) != 0 || g >= MAX_GPUS)
                return fclose(f), parse_error(path, lineno, "mig: bad gpu index");
            if (parse_uint(tok_m, &m) != 0 || m >= MAX_MIG)
                return fclose(f), parse_error(path, lineno, "mig: bad mig index (0..%d)", MAX_MIG - 1);
            if (tok_uuid == NULL || copy_str(mig.uuid, sizeof(mig.uuid), tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "mig: bad uuid");
            if (parse_uint(tok_gi, &mig.gi) != 0 || parse_uint(tok_ci, &mig.ci) != 0)
                return fclose(f), parse_error(path, lineno, "mig: bad gpu/compute instance id");
            if (parse_ull(tok_total, &mig.mem_total, 0) != 0 || parse_ull(tok_used, &mig.mem_used, 0) != 0)
                return fclose(f), parse_error(path, lineno, "mig: bad memory total/used");
            if (copy_str(mig.profile, sizeof(mig.profile), profile) != 0)
                return fclose(f), parse_error(path, lineno, "mig: missing or too long profile");
            if (g_parse.migs[g][m].present)
                return fclose(f), parse_error(path, lineno, "mig: %u:%u declared twice", g, m);
            mig.present = 1;
            g_parse.migs[g][m] = mig;
        } else if (strcmp(kw, "reserved") == 0) {
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            char *tok_bytes = strtok_r(NULL, " \t", &save);
            if (nreserved >= MAX_GPUS * (MAX_MIG + 1))
                return fclose(f), parse_error(path, lineno, "reserved: too many lines");
            if (tok_uuid == NULL || copy_str(reserved_uuid[nreserved], UUID_LEN, tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "reserved: bad device uuid");
            if (parse_ull(tok_bytes, &reserved_bytes[nreserved], 0) != 0)
                return fclose(f), parse_error(path, lineno, "reserved: bad bytes");
            nreserved++;
        } else if (strcmp(kw, "proc") == 0 || strcmp(kw, "gproc") == 0) {
            fake_proc *p;
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            char *tok_pid = strtok_r(NULL, " \t", &save);
            char *tok_used = strtok_r(NULL, " \t", &save);
            if (g_parse.nprocs >= MAX_PROCS)
                return fclose(f), parse_error(path, lineno, "proc: more than %d processes", MAX_PROCS);
            p = &g_parse.procs[g_parse.nprocs];
            if (tok_uuid == NULL || copy_str(proc_uuid[g_parse.nprocs], UUID_LEN, tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "proc: bad device uuid");
            if (parse_uint(tok_pid, &p->pid) != 0)
                return fclose(f), parse_error(path, lineno, "proc: bad pid");
            if (parse_ull(tok_used, &p->used, 1) != 0)
                return fclose(f), parse_error(path, lineno, "proc: bad used memory (bytes or na)");
            p->graphics = kw[0] == 'g';
            g_parse.nprocs++;
        } else if (strcmp(kw, "usample") == 0) {
            fake_sample *sample;
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            char *tok_ts = strtok_r(NULL, " \t", &save);
            char *tok_value = strtok_r(NULL, " \t", &save);
            if (g_parse.nsamples >= MAX_SAMPLES)
                return fclose(f), parse_error(path, lineno, "usample: more than %d samples", MAX_SAMPLES);
            sample = &g_parse.samples[g_parse.nsamples];
            if (tok_uuid == NULL || copy_str(sample->uuid, sizeof(sample->uuid), tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "usample: bad gpu uuid");
            if (parse_ull(tok_ts, &sample->ts, 0) != 0)
                return fclose(f), parse_error(path, lineno, "usample: bad timestamp");
            if (parse_uint(tok_value, &sample->value) != 0)
                return fclose(f), parse_error(path, lineno, "usample: bad value");
            g_parse.nsamples++;
        } else if (strcmp(kw, "fail") == 0 || strcmp(kw, "hang") == 0) {
            int is_hang = kw[0] == 'h';
            char *tok_fn = strtok_r(NULL, " \t", &save);
            char *tok_arg = strtok_r(NULL, " \t", &save);
            char *tok_uuid = strtok_r(NULL, " \t", &save);
            if (tok_fn == NULL)
                return fclose(f), parse_error(path, lineno, "%s: missing function name", kw);
            if (!is_hang && strcmp(tok_fn, "init") == 0) {
                unsigned int code = NVML_ERROR_DRIVER_NOT_LOADED;
                if (tok_arg != NULL && (parse_uint(tok_arg, &code) != 0 || code == 0))
                    return fclose(f), parse_error(path, lineno, "fail init: bad error code");
                g_parse.init_fail_code = (int)code;
                continue;
            }
            if (g_parse.nrules >= MAX_RULES)
                return fclose(f), parse_error(path, lineno, "more than %d fail/hang rules", MAX_RULES);
            fake_rule *r = &g_parse.rules[g_parse.nrules];
            memset(r, 0, sizeof(*r));
            if (copy_str(r->fn, sizeof(r->fn), tok_fn) != 0)
                return fclose(f), parse_error(path, lineno, "%s: bad function name", kw);
            if (is_hang) {
                char *end;
                if (tok_arg == NULL)
                    return fclose(f), parse_error(path, lineno, "hang: missing seconds");
                r->hang_s = strtod(tok_arg, &end);
                if (*end != '\0' || r->hang_s <= 0)
                    return fclose(f), parse_error(path, lineno, "hang: bad seconds");
            } else {
                unsigned int code;
                if (parse_uint(tok_arg, &code) != 0 || code == 0)
                    return fclose(f), parse_error(path, lineno, "fail: bad error code");
                r->code = (int)code;
            }
            if (tok_uuid != NULL && copy_str(r->uuid, sizeof(r->uuid), tok_uuid) != 0)
                return fclose(f), parse_error(path, lineno, "%s: bad device uuid", kw);
            g_parse.nrules++;
        } else {
            return fclose(f), parse_error(path, lineno, "unknown directive '%s'", kw);
        }
    }
    fclose(f);

    g_parse.ngpus = gpu_lines;
    for (unsigned int g = 0; g < MAX_GPUS; g++) {
        if (g < gpu_lines && !g_parse.gpus[g].present)
            return parse_error(path, lineno, "gpu indexes must be 0..%u without gaps", gpu_lines - 1);
        for (unsigned int m = 0; m < MAX_MIG; m++) {
            if (!g_parse.migs[g][m].present)
                continue;
            if (g >= gpu_lines)
                return parse_error(path, lineno, "mig %u:%u: no gpu %u", g, m, g);
            if (g_parse.gpus[g].mig != 1)
                return parse_error(path, lineno, "mig %u:%u: gpu %u is not in MIG mode", g, m, g);
        }
    }
    for (unsigned int i = 0; i < g_parse.nprocs; i++) {
        if (find_device_uuid(&g_parse, proc_uuid[i], &g_parse.procs[i].gpu, &g_parse.procs[i].mig) != 0)
            return parse_error(path, lineno, "proc %u: no device %s", g_parse.procs[i].pid, proc_uuid[i]);
        if (g_parse.procs[i].graphics && g_parse.procs[i].mig >= 0)
            return parse_error(path, lineno, "gproc %u: %s is a MIG device (no graphics)", g_parse.procs[i].pid,
                               proc_uuid[i]);
    }
    for (unsigned int i = 0; i < nreserved; i++) {
        unsigned int g;
        int m;
        if (find_device_uuid(&g_parse, reserved_uuid[i], &g, &m) != 0)
            return parse_error(path, lineno, "reserved: no device %s", reserved_uuid[i]);
        if (m < 0)
            g_parse.gpus[g].mem_reserved = reserved_bytes[i];
        else
            g_parse.migs[g][m].mem_reserved = reserved_bytes[i];
    }
    g_parse.valid = 1;
    return 0;
}

/* Re-reads the state file if it changed. Caller holds g_lock. */
static void refresh_locked(void) {
    const char *path = getenv("DS01_FAKE_NVML_STATE");
    struct stat st;
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(g_loaded_path) || stat(path, &st) != 0) {
        set_missing();
        g_loaded = 0;
        return;
    }
    if (g_loaded && strcmp(path, g_loaded_path) == 0 && st.st_dev == g_loaded_dev &&
        st.st_ino == g_loaded_ino && st.st_size == g_loaded_size &&
        st.st_mtim.tv_sec == g_loaded_mtime.tv_sec && st.st_mtim.tv_nsec == g_loaded_mtime.tv_nsec)
        return;
    int rc = parse_state(path);
    if (rc == 0) {
        memcpy(&g_state, &g_parse, sizeof(g_state));
    } else if (rc > 0) {
        set_missing();
        g_loaded = 0;
        return;
    } else {
        memset(&g_state, 0, sizeof(g_state));
        g_state.valid = 0;
        g_state.invalid_code = NVML_ERROR_UNKNOWN;
    }
    strcpy(g_loaded_path, path);
    g_loaded = 1;
    g_loaded_dev = st.st_dev;
    g_loaded_ino = st.st_ino;
    g_loaded_size = st.st_size;
    g_loaded_mtime = st.st_mtim;
}

static int fn_matches(const char *rule_fn, const char *fn) {
    size_t n = strlen(rule_fn);
    if (strcmp(rule_fn, fn) == 0)
        return 1;
    /* A base name also matches its versioned symbols: X matches X_v2, X_v3. */
    return strncmp(rule_fn, fn, n) == 0 && fn[n] == '_' && fn[n + 1] == 'v' && fn[n + 2] >= '0' &&
           fn[n + 2] <= '9';
}

static const char *handle_uuid(const fake_handle *h) {
    if (h == NULL || h->gpu >= g_state.ngpus)
        return NULL;
    if (h->is_mig)
        return g_state.migs[h->gpu][h->mig].present ? g_state.migs[h->gpu][h->mig].uuid : NULL;
    return g_state.gpus[h->gpu].uuid;
}

static int handle_in_range(const fake_handle *h) {
    if (h == NULL)
        return 0;
    if (h >= &g_gpu_handles[0] && h < &g_gpu_handles[MAX_GPUS])
        return 1;
    return h >= &g_mig_handles[0][0] && h < &g_mig_handles[0][0] + MAX_GPUS * MAX_MIG;
}

/* The first fail/hang rule that applies to fn on h, or NULL. Caller holds g_lock. */
static const fake_rule *matching_rule(const char *fn, const fake_handle *h) {
    const char *uuid = handle_in_range(h) ? handle_uuid(h) : NULL;
    for (unsigned int i = 0; i < g_state.nrules; i++) {
        const fake_rule *r = &g_state.rules[i];
        if (!fn_matches(r->fn, fn))
            continue;
        if (r->uuid[0] != '\0' && (uuid == NULL || strcmp(r->uuid, uuid) != 0))
            continue;
        return r;
    }
    return NULL;
}

/*
 * Common entry: lock, reload, check initialisation, apply fail/hang rules. Returns NVML_SUCCESS
 * with the lock held, or an error with the lock released.
 */
static nvmlReturn_t enter(const char *fn, const fake_handle *h) {
    struct timespec start, now;
    const fake_rule *r;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_mutex_lock(&g_lock);
    for (;;) {
        refresh_locked();
        if (g_init_count == 0) {
            pthread_mutex_unlock(&g_lock);
            return NVML_ERROR_UNINITIALIZED;
        }
        if (!g_state.valid) {
            nvmlReturn_t code = g_state.invalid_code;
            pthread_mutex_unlock(&g_lock);
            return code;
        }
        r = matching_rule(fn, h);
        if (r == NULL)
            return NVML_SUCCESS;
        if (r->hang_s <= 0) {
            nvmlReturn_t code = r->code;
            pthread_mutex_unlock(&g_lock);
            return code;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed_s = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (elapsed_s >= r->hang_s)
            return NVML_SUCCESS;
        /* Block without the lock, in short steps, so a test can lift the hang by rewriting the state. */
        pthread_mutex_unlock(&g_lock);
        struct timespec step = {0, 10 * 1000 * 1000};
        nanosleep(&step, NULL);
        pthread_mutex_lock(&g_lock);
    }
}

static nvmlReturn_t leave(nvmlReturn_t rc) {
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Validates a handle against the current state. Caller holds g_lock. */
static nvmlReturn_t check_handle(const fake_handle *h) {
    if (!handle_in_range(h))
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!h->is_mig)
        return h->gpu < g_state.ngpus ? NVML_SUCCESS : NVML_ERROR_GPU_IS_LOST;
    if (h->gpu >= g_state.ngpus)
        return NVML_ERROR_GPU_IS_LOST;
    if (g_state.gpus[h->gpu].mig != 1 || !g_state.migs[h->gpu][h->mig].present)
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

#define ENTER_DEVICE(fn, dev)                                                                          \
    do {                                                                                               \
        nvmlReturn_t rc_ = enter((fn), (dev));                                                         \
        if (rc_ != NVML_SUCCESS)                                                                       \
            return rc_;                                                                                \
        rc_ = check_handle(dev);                                                                       \
        if (rc_ != NVML_SUCCESS)                                                                       \
            return leave(rc_);                                                                         \
    } while (0)

static nvmlReturn_t copy_out(char *dst, unsigned int cap, const char *src) {
    size_t n = strlen(src);
    if (dst == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (cap < n + 1)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

/* Not an NVML symbol: lets a test process tell this library from NVIDIA's. */
EXPORT const char ds01_fake_nvml[] = "ds01 stand-in NVML";

/* ---- Initialisation ------------------------------------------------------------------------- */

static nvmlReturn_t do_init(const char *fn) {
    pthread_mutex_lock(&g_lock);
    refresh_locked();
    if (!g_state.valid)
        return leave(g_state.invalid_code);
    if (g_state.init_fail_code != 0)
        return leave(g_state.init_fail_code);
    for (unsigned int i = 0; i < g_state.nrules; i++) {
        const fake_rule *r = &g_state.rules[i];
        if (r->hang_s <= 0 && r->uuid[0] == '\0' && fn_matches(r->fn, fn))
            return leave(r->code);
    }
    if (g_init_count++ == 0 && g_dev_fd < 0) {
        char dev[4096 + 8];
        snprintf(dev, sizeof dev, "%s.dev", g_loaded_path);
        g_dev_fd = open(dev, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
    }
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlInit(void) { return do_init("nvmlInit"); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init("nvmlInitWithFlags");
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count == 0)
        return leave(NVML_ERROR_UNINITIALIZED);
    if (--g_init_count == 0 && g_dev_fd >= 0) {
        close(g_dev_fd);
        g_dev_fd = -1;
    }
    return leave(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt request issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Unknown Error";
    }
}

/* ---- System queries ----------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t rc = enter("nvmlSystemGetDriverVersion", NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    return leave(copy_out(version, length, g_state.driver));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    char buf[96];
    nvmlReturn_t rc = enter("nvmlSystemGetNVMLVersion", NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    snprintf(buf, sizeof(buf), "12.%s", g_state.driver);
    return leave(copy_out(version, length, buf));
}

static nvmlReturn_t cuda_version(const char *fn, int *v) {
    nvmlReturn_t rc = enter(fn, NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    if (v == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *v = 12040;
    return leave(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    return cuda_version("nvmlSystemGetCudaDriverVersion", v);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    return cuda_version("nvmlSystemGetCudaDriverVersion_v2", v);
}

/* ---- Enumeration ------------------------------------------------------------------------------- */

static nvmlReturn_t device_count(const char *fn, unsigned int *count) {
    nvmlReturn_t rc = enter(fn, NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    if (count == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *count = g_state.ngpus;
    return leave(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *c) { return device_count("nvmlDeviceGetCount", c); }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *c) { return device_count("nvmlDeviceGetCount_v2", c); }

static nvmlReturn_t handle_by_index(const char *fn, unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t rc = enter(fn, NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    if (device == NULL || index >= g_state.ngpus)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *device = &g_gpu_handles[index];
    return leave(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) {
    return handle_by_index("nvmlDeviceGetHandleByIndex", i, d);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    return handle_by_index("nvmlDeviceGetHandleByIndex_v2", i, d);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    unsigned int g;
    int m;
    nvmlReturn_t rc = enter("nvmlDeviceGetHandleByUUID", NULL);
    if (rc != NVML_SUCCESS)
        return rc;
    if (uuid == NULL || device == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (find_device_uuid(&g_state, uuid, &g, &m) != 0)
        return leave(NVML_ERROR_NOT_FOUND);
    *device = m < 0 ? &g_gpu_handles[g] : &g_mig_handles[g][m];
    return leave(NVML_SUCCESS);
}

/* ---- Identity ------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER_DEVICE("nvmlDeviceGetIndex", device);
    if (index == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (device->is_mig)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *index = device->gpu;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER_DEVICE("nvmlDeviceGetUUID", device);
    return leave(copy_out(uuid, length, handle_uuid(device)));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    char buf[NAME_LEN + 48];
    ENTER_DEVICE("nvmlDeviceGetName", device);
    if (device->is_mig)
        snprintf(buf, sizeof(buf), "%s MIG %s", g_state.gpus[device->gpu].name,
                 g_state.migs[device->gpu][device->mig].profile);
    else
        snprintf(buf, sizeof(buf), "%s", g_state.gpus[device->gpu].name);
    return leave(copy_out(name, length, buf));
}

/* ---- Memory and utilisation --------------------------------------------------------------------- */

static void device_memory(const fake_handle *h, unsigned long long *total, unsigned long long *used,
                          unsigned long long *reserved) {
    if (h->is_mig) {
        *total = g_state.migs[h->gpu][h->mig].mem_total;
        *used = g_state.migs[h->gpu][h->mig].mem_used;
        *reserved = g_state.migs[h->gpu][h->mig].mem_reserved;
    } else {
        *total = g_state.gpus[h->gpu].mem_total;
        *used = g_state.gpus[h->gpu].mem_used;
        *reserved = g_state.gpus[h->gpu].mem_reserved;
    }
}

/* v1 has no "reserved": its used counts the driver's reservation (as on real R510+ drivers). */
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    unsigned long long total, used, reserved;
    ENTER_DEVICE("nvmlDeviceGetMemoryInfo", device);
    if (memory == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    device_memory(device, &total, &used, &reserved);
    memory->total = total;
    memory->used = used + reserved;
    memory->free = used + reserved <= total ? total - used - reserved : 0;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    unsigned long long total, used, reserved;
    ENTER_DEVICE("nvmlDeviceGetMemoryInfo_v2", device);
    if (memory == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (memory->version != nvmlMemory_v2)
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    device_memory(device, &total, &used, &reserved);
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = used + reserved <= total ? total - used - reserved : 0;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    const fake_gpu *gpu;
    ENTER_DEVICE("nvmlDeviceGetUtilizationRates", device);
    if (utilization == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    gpu = &g_state.gpus[device->gpu];
    /* Real A100/H100: no utilisation for a MIG device nor for a GPU in MIG mode. */
    if (device->is_mig || gpu->mig == 1 || gpu->util < 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    utilization->gpu = (unsigned int)gpu->util;
    utilization->memory = gpu->mem_total ? (unsigned int)(gpu->mem_used * 100 / gpu->mem_total) : 0;
    return leave(NVML_SUCCESS);
}

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned long long timeStamp;
    nvmlValue_t sampleValue;
} nvmlSample_t;

#define NVML_GPU_UTILIZATION_SAMPLES 1U
#define NVML_VALUE_TYPE_UNSIGNED_INT 1U

/* The two-call protocol: samples NULL gives the count, then a buffer of that many is filled. */
EXPORT nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t device, unsigned int type, unsigned long long last_seen,
                                         unsigned int *value_type, unsigned int *count, nvmlSample_t *samples) {
    const fake_gpu *gpu;
    unsigned int i, newer = 0, out = 0;
    ENTER_DEVICE("nvmlDeviceGetSamples", device);
    if (value_type == NULL || count == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    gpu = &g_state.gpus[device->gpu];
    if (type != NVML_GPU_UTILIZATION_SAMPLES || device->is_mig || gpu->mig == 1 || gpu->util < 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    for (i = 0; i < g_state.nsamples; i++)
        if (strcmp(g_state.samples[i].uuid, gpu->uuid) == 0 && g_state.samples[i].ts > last_seen)
            newer++;
    if (newer == 0)
        return leave(NVML_ERROR_NOT_FOUND);
    *value_type = NVML_VALUE_TYPE_UNSIGNED_INT;
    if (samples == NULL) {
        *count = newer;
        return leave(NVML_SUCCESS);
    }
    for (i = 0; i < g_state.nsamples && out < *count; i++) {
        const fake_sample *sample = &g_state.samples[i];
        if (strcmp(sample->uuid, gpu->uuid) != 0 || sample->ts <= last_seen)
            continue;
        memset(&samples[out], 0, sizeof(samples[out]));
        samples[out].timeStamp = sample->ts;
        samples[out].sampleValue.uiVal = sample->value;
        out++;
    }
    *count = out;
    return leave(NVML_SUCCESS);
}

/* ---- MIG ------------------------------------------------------------------------------------------ */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    const fake_gpu *gpu;
    ENTER_DEVICE("nvmlDeviceGetMigMode", device);
    if (current == NULL || pending == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    gpu = &g_state.gpus[device->gpu];
    if (device->is_mig || gpu->mig < 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *current = (unsigned int)gpu->mig;
    *pending = (unsigned int)gpu->mig;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    ENTER_DEVICE("nvmlDeviceGetMaxMigDeviceCount", device);
    if (count == NULL || device->is_mig)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    /* Zero when MIG is unsupported or disabled, as documented. */
    *count = g_state.gpus[device->gpu].mig == 1 ? MAX_MIG : 0;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice) {
    ENTER_DEVICE("nvmlDeviceGetMigDeviceHandleByIndex", device);
    if (migDevice == NULL || device->is_mig || g_state.gpus[device->gpu].mig != 1 || index >= MAX_MIG)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!g_state.migs[device->gpu][index].present)
        return leave(NVML_ERROR_NOT_FOUND);
    *migDevice = &g_mig_handles[device->gpu][index];
    return leave(NVML_SUCCESS);
}

/* "<c>c.<g>g.<mem>" or "<g>g.<mem>": the leading counts of a MIG profile name (0 when absent). */
static void profile_slices(const char *profile, unsigned int *gi, unsigned int *ci) {
    unsigned int first = 0, second = 0;
    char unit = 0;
    *gi = *ci = 0;
    if (sscanf(profile, "%uc.%ug", &first, &second) == 2) {
        *ci = first;
        *gi = second;
    } else if (sscanf(profile, "%u%c", &first, &unit) == 2 && unit == 'g') {
        *gi = *ci = first;
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    ENTER_DEVICE("nvmlDeviceGetAttributes_v2", device);
    if (attributes == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    /* Real NVML answers only for MIG device handles. */
    if (!device->is_mig)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    memset(attributes, 0, sizeof(*attributes));
    {
        const fake_mig *mig = &g_state.migs[device->gpu][device->mig];
        profile_slices(mig->profile, &attributes->gpuInstanceSliceCount, &attributes->computeInstanceSliceCount);
        attributes->multiprocessorCount = 14U * attributes->computeInstanceSliceCount;
        attributes->memorySizeMB = mig->mem_total / (1024ULL * 1024ULL);
    }
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    return nvmlDeviceGetAttributes_v2(device, attributes);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    ENTER_DEVICE("nvmlDeviceIsMigDeviceHandle", device);
    if (isMigDevice == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *isMigDevice = device->is_mig ? 1U : 0U;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
    ENTER_DEVICE("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice);
    if (device == NULL || !migDevice->is_mig)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *device = &g_gpu_handles[migDevice->gpu];
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    ENTER_DEVICE("nvmlDeviceGetGpuInstanceId", device);
    if (id == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!device->is_mig)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *id = g_state.migs[device->gpu][device->mig].gi;
    return leave(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    ENTER_DEVICE("nvmlDeviceGetComputeInstanceId", device);
    if (id == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!device->is_mig)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *id = g_state.migs[device->gpu][device->mig].ci;
    return leave(NVML_SUCCESS);
}

/* ---- Processes ------------------------------------------------------------------------------------ */

/*
 * Collects the processes of one kind (graphics or compute) visible on a handle into out (at most
 * cap); returns how many exist. A MIG device sees its own; a GPU in MIG mode sees every process on
 * it, with instance ids.
 */
static unsigned int collect_procs(const fake_handle *h, nvmlProcessDetail_v1_t *out, unsigned int cap,
                                  int graphics) {
    unsigned int n = 0;
    for (unsigned int i = 0; i < g_state.nprocs; i++) {
        const fake_proc *p = &g_state.procs[i];
        if (p->gpu != h->gpu || p->graphics != graphics)
            continue;
        if (h->is_mig && p->mig != (int)h->mig)
            continue;
        if (out != NULL && n < cap) {
            out[n].pid = p->pid;
            out[n].usedGpuMemory = p->used;
            if (p->mig >= 0) {
                out[n].gpuInstanceId = g_state.migs[p->gpu][p->mig].gi;
                out[n].computeInstanceId = g_state.migs[p->gpu][p->mig].ci;
            } else {
                out[n].gpuInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
                out[n].computeInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
            }
            out[n].usedGpuCcProtectedMemory = 0;
        }
        n++;
    }
    return n;
}

static nvmlProcessDetail_v1_t g_proc_scratch[MAX_PROCS];

/* version 1: nvmlProcessInfo_v1_t, 2 or 3: nvmlProcessInfo_v2_t. Caller holds g_lock. */
static nvmlReturn_t running_procs(const fake_handle *h, unsigned int *count, void *infos, int version,
                                  int graphics) {
    unsigned int n;
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (graphics && h->is_mig)
        return NVML_ERROR_NOT_SUPPORTED; /* MIG devices run no graphics */
    n = collect_procs(h, g_proc_scratch, MAX_PROCS, graphics);
    /* The documented two-call protocol: report the size, succeed only when it all fits. */
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (infos == NULL || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < n; i++) {
        if (version == 1) {
            nvmlProcessInfo_v1_t *o = &((nvmlProcessInfo_v1_t *)infos)[i];
            o->pid = g_proc_scratch[i].pid;
            o->usedGpuMemory = g_proc_scratch[i].usedGpuMemory;
        } else {
            nvmlProcessInfo_v2_t *o = &((nvmlProcessInfo_v2_t *)infos)[i];
            o->pid = g_proc_scratch[i].pid;
            o->usedGpuMemory = g_proc_scratch[i].usedGpuMemory;
            o->gpuInstanceId = g_proc_scratch[i].gpuInstanceId;
            o->computeInstanceId = g_proc_scratch[i].computeInstanceId;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *count,
                                                         nvmlProcessInfo_v1_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetComputeRunningProcesses", device);
    return leave(running_procs(device, count, infos, 1, 0));
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                            nvmlProcessInfo_v2_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetComputeRunningProcesses_v2", device);
    return leave(running_procs(device, count, infos, 2, 0));
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                            nvmlProcessInfo_v2_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetComputeRunningProcesses_v3", device);
    return leave(running_procs(device, count, infos, 3, 0));
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int *count,
                                                          nvmlProcessInfo_v1_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetGraphicsRunningProcesses", device);
    return leave(running_procs(device, count, infos, 1, 1));
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                             nvmlProcessInfo_v2_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetGraphicsRunningProcesses_v2", device);
    return leave(running_procs(device, count, infos, 2, 1));
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                             nvmlProcessInfo_v2_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetGraphicsRunningProcesses_v3", device);
    return leave(running_procs(device, count, infos, 3, 1));
}

EXPORT nvmlReturn_t nvmlDeviceGetRunningProcessDetailList(nvmlDevice_t device, nvmlProcessDetailList_v1_t *plist) {
    unsigned int n;
    ENTER_DEVICE("nvmlDeviceGetRunningProcessDetailList", device);
    if (plist == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (plist->version != nvmlProcessDetailList_v1)
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    /* Compute or graphics processes by the mode; MPS compute (mode 2) runs on no stand-in host. */
    if (plist->mode == NVML_PROCESS_MODE_GRAPHICS && device->is_mig)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    n = plist->mode <= NVML_PROCESS_MODE_GRAPHICS
            ? collect_procs(device, g_proc_scratch, MAX_PROCS, plist->mode == NVML_PROCESS_MODE_GRAPHICS)
            : 0;
    if (n == 0) {
        plist->numProcArrayEntries = 0;
        return leave(NVML_SUCCESS);
    }
    if (plist->procArray == NULL || plist->numProcArrayEntries < n) {
        plist->numProcArrayEntries = n;
        return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    memcpy(plist->procArray, g_proc_scratch, n * sizeof(nvmlProcessDetail_v1_t));
    plist->numProcArrayEntries = n;
    return leave(NVML_SUCCESS);
}
