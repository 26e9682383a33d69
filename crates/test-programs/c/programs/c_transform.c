/*
 * c_transform: the C twin of the Rust `transform` test program. XORs every
 * byte with 0xA5, then forwards the result to the function named by
 * CWASI_NEXT (if set and not empty) and answers with its reply; otherwise
 * answers with the transformed bytes. A request that starts with "fail!"
 * fails the handler, and a failed forward fails it with the callee's
 * message: the error paths of the ABI, from C.
 */
#include <stdlib.h>
#include <string.h>

#include "cwasi.h"

#define MASK 0xA5

static char forward_error[512];

static int32_t transform(const uint8_t *req, size_t len, cwasi_bytes *resp) {
    if (len >= 5 && memcmp(req, "fail!", 5) == 0) {
        return cwasi_fail("c_transform was asked to fail");
    }
    cwasi_bytes out;
    if (cwasi_bytes_alloc(&out, len) != 0) return cwasi_fail("out of memory");
    for (size_t i = 0; i < len; i++) out.ptr[i] = req[i] ^ MASK;
    const char *next = getenv("CWASI_NEXT");
    if (next == NULL || next[0] == '\0') {
        *resp = out;
        return 0;
    }
    int32_t rc = cwasi_call(next, out.ptr, out.len, resp);
    free(out.ptr);
    if (rc != 0) {
        cwasi_last_error(forward_error, sizeof forward_error);
        return cwasi_fail(forward_error);
    }
    return 0;
}

CWASI_EXPORT_HANDLER(transform)
