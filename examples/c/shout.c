/*
 * shout: a CWASI function in C. It answers with its request in upper case;
 * with CWASI_NEXT set, it hands the upper-cased text on to that function by
 * name and answers with what that one says. See docs/guest-c.md.
 */
#include <ctype.h>
#include <stdlib.h>

#include "cwasi.h"

static int32_t shout(const uint8_t *req, size_t len, cwasi_bytes *resp) {
    cwasi_bytes loud;
    if (cwasi_bytes_alloc(&loud, len) != 0) return cwasi_fail("out of memory");
    for (size_t i = 0; i < len; i++) loud.ptr[i] = (uint8_t)toupper(req[i]);
    const char *next = getenv("CWASI_NEXT");
    if (next == NULL || next[0] == '\0') {
        *resp = loud;
        return 0;
    }
    int32_t rc = cwasi_call(next, loud.ptr, loud.len, resp);
    free(loud.ptr);
    return rc == 0 ? 0 : cwasi_fail("the next function failed");
}

CWASI_EXPORT_HANDLER(shout)
