/* TensorBoard event files written by hand: TFRecord framing (u64 length, masked CRC-32C of the length, data,
 * masked CRC-32C of the data) around Event protobufs (wall_time, step, file_version or a Summary of scalar and
 * PNG image values). The file is DIR/events.out.tfevents.<unix time>.<host>; TensorBoard reads every such file
 * in DIR. Records are flushed after each call, so a crash loses nothing already written. */
#ifndef V3_TB_EVENTS_H
#define V3_TB_EVENTS_H
#include <stddef.h>
#include <stdint.h>

typedef struct TbWriter TbWriter;

/* Create DIR if needed and open a new event file (first record: file_version "brain.Event:2").
 * NULL with v3_last_error() on failure. */
TbWriter *tb_open(const char *dir);
/* Both are no-ops returning 0 when w is NULL (a run whose event file could not be opened). */
int tb_scalar(TbWriter *w, const char *tag, int64_t step, float value);
/* An 8-bit RGB image [h][w][3], PNG-encoded. */
int tb_image_rgb(TbWriter *w, const char *tag, int64_t step, const uint8_t *rgb, int width, int height);
const char *tb_path(const TbWriter *w);
void tb_close(TbWriter *w);

/* The TFRecord checksum: ((c >> 15) | (c << 17)) + 0xa282ead8 of the CRC-32C c. */
uint32_t tb_masked_crc(const void *data, size_t n);
#endif
