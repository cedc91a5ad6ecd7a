/* TensorBoard images written by `v3 train` at validation (config key tb_images_every_n_epochs). */
#ifndef V3_TRAIN_IMAGES_H
#define V3_TRAIN_IMAGES_H
#include <stdint.h>

#include "datasource.h"
#include "model.h"
#include "tb_events.h"

/* "val/reconstruction ..." (first validation sample: inputs above outputs) and "val/codebook_sheet ..." from the
 * host model m (its weights must be current: the loop calls it after state_to_host). Eval mode, no
 * state changes. 0, or -1 with v3_last_error(). A NULL writer does nothing. */
int train_tb_images(TbWriter *tb, Model *m, DataSource *val, uint64_t seed, int64_t step);
#endif
