/*
 * handcue_frame.c - frame receiver and request check (SPEC.md 15, 16.5).
 */
#include "handcue_frame.h"

#include <string.h>

#define STATUS_OK 0u
#define STATUS_BAD_REQUEST 2u
#define STATUS_UNSUPPORTED_VERSION 3u
#define STATUS_UNKNOWN_REQUEST 1u
#define KIND_REQUEST 0u
#define OPCODE_UPLOAD_BEGIN 2u
#define OPCODE_UPLOAD_DATA 3u
#define OPCODE_SET_SETTINGS 13u
#define OPCODE_SET_TIME 14u
#define OPCODE_HISTORY 15u
#define OPCODE_PREVIEW 17u
#define OPCODE_LAST 17u

void hc_frame_rx_init(hc_frame_rx *rx) { memset(rx, 0, sizeof *rx); }

uint16_t hc_crc16(const uint8_t *data, size_t length)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < length; i++) {
        int bit;
        crc ^= (uint16_t)(data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (uint16_t)((crc & 0x8000u) ? ((unsigned)crc << 1) ^ 0x1021u : (unsigned)crc << 1);
        }
    }
    return crc;
}

/* COBS-decode buf[0..n) in place (the output never overtakes the input).
 * Returns the decoded length or -1 for malformed input. */
static int cobs_decode_in_place(uint8_t *buf, size_t n)
{
    size_t in = 0, out = 0;
    while (in < n) {
        uint8_t code = buf[in++];
        size_t k;
        if (code == 0u || (size_t)(code - 1u) > n - in) return -1;
        for (k = 1; k < code; k++) buf[out++] = buf[in++];
        if (code < 0xFFu && in < n) buf[out++] = 0;
    }
    return (int)out;
}

int hc_frame_rx_byte(hc_frame_rx *rx, uint8_t byte, const uint8_t **message)
{
    int decoded;
    size_t length;
    if (byte != 0u) {
        if (rx->discarding) return -1;
        if (rx->length >= HC_FRAME_BUFFER) { /* one byte more than the limit: drop up to the next 0x00 */
            rx->stats.oversized++;
            rx->length = 0;
            rx->discarding = 1;
            return -1;
        }
        rx->buffer[rx->length++] = byte;
        return -1;
    }
    length = rx->length;
    rx->length = 0;
    if (rx->discarding) {
        rx->discarding = 0;
        return -1;
    }
    if (length == 0u) return -1; /* empty frame */
    decoded = cobs_decode_in_place(rx->buffer, length);
    if (decoded < 2) {
        rx->stats.bad_cobs++;
        return -1;
    }
    decoded -= 2;
    if ((size_t)decoded > HC_MAX_FRAME) {
        rx->stats.oversized++;
        return -1;
    }
    if (hc_crc16(rx->buffer, (size_t)decoded) != (uint16_t)(rx->buffer[decoded] | (rx->buffer[decoded + 1] << 8))) {
        rx->stats.bad_crc++;
        return -1;
    }
    rx->stats.frames++;
    *message = rx->buffer;
    return decoded;
}

size_t hc_frame_encode(const uint8_t *message, size_t length, uint8_t *out, size_t out_size)
{
    size_t total = length + 2u, i, code_at = 1, o = 2;
    uint16_t crc = hc_crc16(message, length);
    uint8_t code = 1;
    if (out_size < total + total / 254u + 3u) return 0;
    out[0] = 0; /* a leading delimiter ends whatever a torn frame left in the receiver */
    for (i = 0; i < total; i++) {
        uint8_t b = i < length ? message[i] : (uint8_t)(i == length ? crc & 0xFFu : crc >> 8);
        if (b == 0u) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
            continue;
        }
        out[o++] = b;
        if (++code == 0xFFu) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        }
    }
    out[code_at] = code;
    out[o++] = 0;
    return o;
}

hc_request_check hc_check_request(const uint8_t *m, size_t length)
{
    hc_request_check r;
    size_t body;
    r.respond = true;
    r.status = STATUS_OK;
    r.opcode = 0;
    r.request_id = 0;
    if (length < 4u) { /* 1: the header cannot be trusted */
        r.status = STATUS_BAD_REQUEST;
        return r;
    }
    r.opcode = m[2];
    r.request_id = m[3];
    body = length - 4u;
    if (m[1] != KIND_REQUEST) { /* 2 */
        r.respond = false;
        return r;
    }
    if (m[0] != 1u) { /* 3 */
        r.status = STATUS_UNSUPPORTED_VERSION;
    } else if (m[2] < 1u || m[2] > OPCODE_LAST) { /* 4 */
        r.status = STATUS_UNKNOWN_REQUEST;
    } else if (m[2] == OPCODE_PREVIEW) { /* 5: strength, kind, segment_count, then 2 bytes per segment */
        r.status = (body >= 3u && body == 3u + 2u * (size_t)m[6]) ? STATUS_OK : STATUS_BAD_REQUEST;
    } else if (m[2] == OPCODE_UPLOAD_DATA ? body < 4u : body != (m[2] == OPCODE_UPLOAD_BEGIN || m[2] == OPCODE_SET_TIME ? 8u : m[2] == OPCODE_HISTORY ? 5u : m[2] == OPCODE_SET_SETTINGS ? 1u : 0u)) { /* 5 */
        r.status = STATUS_BAD_REQUEST;
    }
    return r;
}
