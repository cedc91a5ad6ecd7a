/* placeholder until the insnotes source lands */
#include "common.h"
#include "datasource.h"
int insnotes_open(const char *dir, const char *split, int n_frag, DataSource *ds) { return v3_error("%s: insnotes not built yet", dir); }
#include "insnotes.h"
void insnotes_defaults(InsnotesParams *p) { (void)p; }
int insnotes_generate(const char *dir, const InsnotesParams *p) { return v3_error("%s: not built yet", dir); }
int insnotes_export_audio(const char *dir, const char *split, uint64_t sample, int start_slot, int n_slots,
                          const char *out_path) { return v3_error("%s: not built yet", dir); }
