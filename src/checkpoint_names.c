/* Which array and attribute names a checkpoint accepts. */
#include "checkpoint_internal.h"

#include <string.h>

static bool name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* Components of [A-Za-z0-9_.-]+ other than "." and "..", separated by single
 * slashes; slashes only when path is true. */
bool ckpt_name_ok(const char *name, bool path)
{
    if (strlen(name) > CKPT_NAME_MAX) return false;
    size_t comp = 0;
    const char *start = name;
    for (const char *p = name;; p++) {
        if (*p == '/' || *p == '\0') {
            if (comp == 0) return false;
            if ((comp == 1 && start[0] == '.') || (comp == 2 && start[0] == '.' && start[1] == '.'))
                return false;
            if (*p == '\0') return true;
            if (!path) return false;
            comp = 0;
            start = p + 1;
        } else if (!name_char_ok(*p)) {
            return false;
        } else {
            comp++;
        }
    }
}

/* True when a is b or a group above b ("x" and "x/y"). */
bool ckpt_name_covers(const char *a, const char *b)
{
    size_t n = strlen(a);
    return strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/');
}

bool ckpt_reserved_attr(const char *name)
{
    return strcmp(name, "format") == 0 || strcmp(name, "format_version") == 0 ||
           strcmp(name, "checksum") == 0;
}
