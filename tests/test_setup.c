/* The set-up is one script (tools/setup.sh); the README must name every Debian package it installs, so a reader
 * can install them by hand (issue 15: the README's list had drifted from the one CI used). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "testing.h"

/* Is word in text as a whole word (bounded by anything but package-name characters)? */
static int has_word(const char *text, const char *word) {
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int l = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '-' || p[-1] == '.');
        int r = !(isalnum((unsigned char)p[n]) || p[n] == '-' || p[n] == '.');
        if (l && r) return 1;
    }
    return 0;
}

TEST(setup_readme_names_every_package_of_the_script) {
    unsigned char *sh, *md;
    size_t nsh, nmd;
    CHECK(test_read_all("tools/setup.sh", &sh, &nsh) == 0, "cannot read tools/setup.sh");
    CHECK(test_read_all("README.md", &md, &nmd) == 0, "cannot read README.md");
    char *sec = strstr((char *)md, "## Set-up");
    CHECK(sec, "README.md has no Set-up section");
    char *end = strstr(sec + 3, "\n## ");
    if (end) *end = 0;
    int rc = 0, found = 0;
    /* every word inside "pkgs=(...)" and "pkgs+=(...)" */
    for (char *p = strstr((char *)sh, "pkgs"); p; p = strstr(p + 4, "pkgs")) {
        char *o = p + 4;
        if (*o == '+') o++;
        if (o[0] != '=' || o[1] != '(') continue;
        char *c = strchr(o, ')');
        CHECK(c, "tools/setup.sh: unterminated package list");
        char *list = strndup(o + 2, (size_t)(c - o - 2));
        for (char *w = strtok(list, " \t\n\\"); w; w = strtok(NULL, " \t\n\\")) {
            found++;
            if (!has_word(sec, w)) { fprintf(stderr, "    README.md Set-up does not name '%s'\n", w); rc = 1; }
        }
        free(list);
    }
    free(sh);
    free(md);
    CHECK(found >= 15, "only %d packages found in tools/setup.sh's lists", found);
    return rc;
}
