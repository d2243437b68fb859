/*
 * handcue_frame.h - the band's frame receiver and request check, C99 reference
 * (optional part of protocol/c/; SPEC.md sections 15 and 16.5).
 *
 * hc_frame_rx turns bytes from a serial line or the BLE RX characteristic
 * into verified messages: COBS, CRC-16/IBM-3740, a fixed receive buffer of
 * HC_FRAME_BUFFER bytes, damaged and oversized frames dropped and counted.
 * hc_check_request() then runs the message checks of SPEC.md 16.5 (1 to 5).
 * Same rules as the library: C99, no allocation, no recursion, no floating
 * point, only <stdint.h> <stddef.h> <stdbool.h> <string.h>.
 */
#ifndef HANDCUE_FRAME_H
#define HANDCUE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HC_MAX_FRAME 256u /* max_frame: largest message accepted (SPEC.md 15.4) */
/* max_encoded_size(HC_MAX_FRAME) - 1: the encoded frame without its delimiter (260). */
#define HC_FRAME_BUFFER (HC_MAX_FRAME + 2u + (HC_MAX_FRAME + 2u) / 254u + 1u)

typedef struct {
    uint32_t frames, bad_crc, bad_cobs, oversized;
} hc_frame_stats;

typedef struct {
    uint8_t buffer[HC_FRAME_BUFFER]; /* encoded bytes; a delivered message is decoded in place */
    uint16_t length;
    uint8_t discarding;
    hc_frame_stats stats;
} hc_frame_rx;

void hc_frame_rx_init(hc_frame_rx *rx);

/* Feed one received byte.  When it completes a verified frame, returns the
 * message length (>= 0) and points *message into rx->buffer, valid until the
 * next call; otherwise returns -1. */
int hc_frame_rx_byte(hc_frame_rx *rx, uint8_t byte, const uint8_t **message);

/* CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF): check value 0x29B1. */
uint16_t hc_crc16(const uint8_t *data, size_t length);

/* Encode `message` as a frame: COBS(message || CRC-16 LE) || 0x00.  Returns
 * the frame length, or 0 when `out_size` is too small. */
size_t hc_frame_encode(const uint8_t *message, size_t length, uint8_t *out, size_t out_size);

/* What to do with a delivered message (SPEC.md 16.5 checks 1 to 5). */
typedef struct {
    bool respond;       /* false: ignore it, send nothing */
    uint8_t status;     /* protocol Status: 0 OK = hand it to the opcode's own checks */
    uint8_t opcode;     /* opcode and request id for the response header */
    uint8_t request_id;
} hc_request_check;

hc_request_check hc_check_request(const uint8_t *message, size_t length);

#ifdef __cplusplus
}
#endif

#endif /* HANDCUE_FRAME_H */
