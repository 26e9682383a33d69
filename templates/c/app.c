/*
 * {{name}}: a CWASI function in C, a core module built with clang as a WASI
 * reactor. It answers with its request upper-cased.
 *
 * To call another function by name: cwasi_call("other", ptr, len, &resp).
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "cwasi.h"

static const char SUFFIX[] = " (upper-cased by {{name}}, in C)";

/* Handles one request: returns 0 with a malloc'd response, or fails with
 * cwasi_fail("why"), which its caller gets as CALLEE_ERROR. */
static int32_t handle(const uint8_t *req, size_t len, cwasi_bytes *resp) {
    if (len == 0) return cwasi_fail("the request is empty: send some text, e.g. --data 'hello'");
    size_t suffix = strlen(SUFFIX);
    if (cwasi_bytes_alloc(resp, len + suffix) != 0) return cwasi_fail("out of memory");
    for (size_t i = 0; i < len; i++) resp->ptr[i] = (uint8_t)toupper(req[i]);
    memcpy(resp->ptr + len, SUFFIX, suffix);
    return 0;
}

CWASI_EXPORT_HANDLER(handle)
