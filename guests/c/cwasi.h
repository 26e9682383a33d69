/*
 * cwasi.h: the CWASI guest ABI (docs/abi.md, version 1) for C, header only.
 *
 * A CWASI function written in C is a WASI reactor module that exports a
 * handler; it calls other functions by name. Build it with Debian's clang,
 * lld and wasi-libc:
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I<dir of cwasi.h> \
 *       -o fn.wasm fn.c
 *
 * In exactly one source file, name the handler:
 *
 *   #include "cwasi.h"
 *
 *   static int32_t shout(const uint8_t *req, size_t len, cwasi_bytes *resp) {
 *       if (cwasi_bytes_alloc(resp, len) != 0) return cwasi_fail("out of memory");
 *       for (size_t i = 0; i < len; i++) resp->ptr[i] = toupper(req[i]);
 *       return 0;
 *   }
 *   CWASI_EXPORT_HANDLER(shout)
 *
 * Buffers are malloc'd: a response the handler returns is freed by this
 * header after the host has copied it out; a response `cwasi_call` returns
 * belongs to the caller, who frees it with free().
 */
#ifndef CWASI_H
#define CWASI_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI's error codes (docs/abi.md, "Error codes"). */
#define CWASI_UNKNOWN_FUNCTION (-1)
#define CWASI_CALLEE_TRAPPED (-2)
#define CWASI_TIMEOUT (-3)
#define CWASI_TOO_LARGE (-4)
#define CWASI_TRANSPORT (-5)
#define CWASI_DENIED (-6)
#define CWASI_INVALID_ARGUMENT (-7)
#define CWASI_CALLEE_ERROR (-8)
#define CWASI_BAD_RESPONSE (-9)
#define CWASI_ALLOC_FAILED (-10)
#define CWASI_UNKNOWN_HANDLE (-11)
#define CWASI_RESOURCE_LIMIT (-12)
#define CWASI_NOT_CALLABLE (-13)

/* Bytes in a malloc'd buffer (ptr may be NULL when len is 0). */
typedef struct {
    uint8_t *ptr;
    size_t len;
} cwasi_bytes;

/* The host's imports, module "cwasi". */
__attribute__((import_module("cwasi"), import_name("call"))) int32_t
cwasi_import_call(const char *target, int32_t target_len, const uint8_t *req,
                  int32_t req_len, uint32_t *out);
__attribute__((import_module("cwasi"), import_name("call_start"))) int64_t
cwasi_import_call_start(const char *target, int32_t target_len,
                        const uint8_t *req, int32_t req_len);
__attribute__((import_module("cwasi"), import_name("call_wait"))) int32_t
cwasi_import_call_wait(int64_t handle, uint32_t *out);
__attribute__((import_module("cwasi"), import_name("last_error"))) int32_t
cwasi_import_last_error(char *buf, int32_t buf_len);

/* Makes `b` a buffer of `len` bytes; 0, or CWASI_ALLOC_FAILED. */
static inline int32_t cwasi_bytes_alloc(cwasi_bytes *b, size_t len) {
    b->len = len;
    b->ptr = len ? (uint8_t *)malloc(len) : NULL;
    return (len && !b->ptr) ? CWASI_ALLOC_FAILED : 0;
}

/* Reads the (ptr, len) pair the host wrote at `out`. */
static inline void cwasi_take_response(const uint32_t out[2],
                                       cwasi_bytes *resp) {
    resp->ptr = (uint8_t *)(uintptr_t)out[0];
    resp->len = out[1];
}

/*
 * Calls the function `target` with `len` bytes at `req` and waits for its
 * answer. Returns 0 and the response in `*resp` (free resp->ptr when done),
 * or a negative CWASI_* code; cwasi_last_error() then says why.
 */
static inline int32_t cwasi_call(const char *target, const uint8_t *req,
                                 size_t len, cwasi_bytes *resp) {
    uint32_t out[2] = {0, 0};
    int32_t rc = cwasi_import_call(target, (int32_t)strlen(target), req,
                                   (int32_t)len, out);
    if (rc == 0) cwasi_take_response(out, resp);
    return rc;
}

/*
 * Starts a call and returns at once: a handle (>= 1) to wait on with
 * cwasi_call_wait, or a negative CWASI_* code. The request is taken before
 * it returns. This is how a function fans out.
 */
static inline int64_t cwasi_call_start(const char *target, const uint8_t *req,
                                       size_t len) {
    return cwasi_import_call_start(target, (int32_t)strlen(target), req,
                                   (int32_t)len);
}

/* Waits for a started call; then as cwasi_call. */
static inline int32_t cwasi_call_wait(int64_t handle, cwasi_bytes *resp) {
    uint32_t out[2] = {0, 0};
    int32_t rc = cwasi_import_call_wait(handle, out);
    if (rc == 0) cwasi_take_response(out, resp);
    return rc;
}

/*
 * Copies the message of the last failed call into `buf` (NUL-terminated,
 * truncated to `cap`) and returns its full length; 0 if no call failed.
 */
static inline size_t cwasi_last_error(char *buf, size_t cap) {
    if (cap == 0) return (size_t)cwasi_import_last_error(buf, 0);
    int32_t n = cwasi_import_last_error(buf, (int32_t)(cap - 1));
    if (n < 0) n = 0;
    buf[(size_t)n < cap - 1 ? (size_t)n : cap - 1] = '\0';
    return (size_t)n;
}

/* The handler's failure message (see cwasi_fail). */
extern const char *cwasi_failure;

/*
 * Fails the handler with `message` (a string that outlives the call, such
 * as a literal): `return cwasi_fail("...");`. The caller gets
 * CWASI_CALLEE_ERROR with the message.
 */
static inline int32_t cwasi_fail(const char *message) {
    cwasi_failure = message;
    return -1;
}

/* The response left by the previous call, freed at the start of the next. */
extern cwasi_bytes cwasi_last_response;

/*
 * Defines the module's exports around `handler`, which has the signature
 *   int32_t handler(const uint8_t *req, size_t len, cwasi_bytes *resp)
 * and returns 0 with a malloc'd response in *resp (or {NULL, 0}), or a
 * failure (see cwasi_fail). The request is freed after the handler returns.
 */
#define CWASI_EXPORT_HANDLER(handler)                                          \
    const char *cwasi_failure = NULL;                                          \
    cwasi_bytes cwasi_last_response = {NULL, 0};                               \
    __attribute__((export_name("cwasi_alloc"))) void *cwasi_alloc(int32_t n) { \
        return malloc((size_t)n);                                              \
    }                                                                          \
    __attribute__((export_name("cwasi_error"))) int64_t cwasi_error(void) {    \
        const char *m = cwasi_failure ? cwasi_failure : "the handler failed"; \
        return (int64_t)(((uint64_t)(uintptr_t)m << 32) | strlen(m));        \
    }                                                                          \
    __attribute__((export_name("cwasi_handle"))) int64_t cwasi_handle(         \
        uint8_t *req, int32_t len) {                                           \
        free(cwasi_last_response.ptr);                                         \
        cwasi_last_response.ptr = NULL;                                        \
        cwasi_last_response.len = 0;                                           \
        cwasi_failure = NULL;                                                  \
        cwasi_bytes resp = {NULL, 0};                                          \
        int32_t rc = handler(req, (size_t)len, &resp);                         \
        free(req);                                                             \
        if (rc != 0) {                                                         \
            free(resp.ptr);                                                    \
            return -1;                                                         \
        }                                                                      \
        cwasi_last_response = resp;                                            \
        return (int64_t)(((uint64_t)(uintptr_t)resp.ptr << 32) |              \
                         (uint32_t)resp.len);                                  \
    }

#ifdef __cplusplus
}
#endif

#endif /* CWASI_H */
