/* placeholder until the phonenums source lands */
#include "common.h"
#include "datasource.h"
int phonenums_open(const char *dir, const char *split, int n_frag, DataSource *ds) { return v3_error("%s: phonenums not built yet", dir); }
#include "phonenums.h"
void phonenums_defaults(PhonenumsParams *p) { (void)p; }
int phonenums_generate(const char *dir, const PhonenumsParams *p) { return v3_error("%s: not built yet", dir); }
