/*
 * HandCue band on Zephyr: the C reference interpreter driving a DRV2605 over
 * I2C (or a GPIO).  UNTESTED ON HARDWARE: written against the Zephyr 3.x/4.x
 * APIs (i2c_reg_write_byte_dt, gpio_pin_set_dt, k_sem, k_uptime_get_32) but
 * never built or run.  See ../README.md.
 */
#include <zephyr/device.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/drivers/i2c.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "handcue.h"
#include "routine.h"

/* DRV2605 registers (TI SLOS854). */
#define DRV2605_MODE 0x01
#define DRV2605_RTP_INPUT 0x02
#define DRV2605_CONTROL3 0x1D
#define DRV2605_MODE_RTP 0x05
#define DRV2605_CONTROL3_DEFAULT 0xA0
#define DRV2605_DATA_FORMAT_RTP_UNSIGNED 0x08

#if DT_NODE_EXISTS(DT_NODELABEL(drv2605))
static const struct i2c_dt_spec haptic = I2C_DT_SPEC_GET(DT_NODELABEL(drv2605));

static int motor_init(void)
{
    if (!i2c_is_ready_dt(&haptic)) return -ENODEV;
    /* ERM open loop is the power-on default; RTP input as unsigned 0..255. */
    int err = i2c_reg_write_byte_dt(&haptic, DRV2605_CONTROL3, DRV2605_CONTROL3_DEFAULT | DRV2605_DATA_FORMAT_RTP_UNSIGNED);
    if (!err) err = i2c_reg_write_byte_dt(&haptic, DRV2605_RTP_INPUT, 0);
    if (!err) err = i2c_reg_write_byte_dt(&haptic, DRV2605_MODE, DRV2605_MODE_RTP); /* also leaves standby */
    return err;
}

static void motor_set(uint8_t amplitude)
{
    /* Percent to the RTP register; how strong 100 % feels depends on the motor (SPEC.md section 6). */
    (void)i2c_reg_write_byte_dt(&haptic, DRV2605_RTP_INPUT, (uint8_t)((amplitude * 255u) / 100u));
}
#else
static const struct gpio_dt_spec motor_pin = GPIO_DT_SPEC_GET(DT_ALIAS(motor0), gpios);

static int motor_init(void)
{
    if (!gpio_is_ready_dt(&motor_pin)) return -ENODEV;
    return gpio_pin_configure_dt(&motor_pin, GPIO_OUTPUT_INACTIVE);
}

static void motor_set(uint8_t amplitude) { (void)gpio_pin_set_dt(&motor_pin, amplitude > 0); }
#endif

/* The button only sets a flag: hc_* calls stay in the main loop (SPEC.md 23.2). */
static const struct gpio_dt_spec button = GPIO_DT_SPEC_GET_OR(DT_ALIAS(sw0), gpios, {0});
static struct gpio_callback button_cb;
static atomic_t button_pressed;
static K_SEM_DEFINE(wake, 0, 1);

static void on_button(const struct device *dev, struct gpio_callback *cb, uint32_t pins)
{
    ARG_UNUSED(dev);
    ARG_UNUSED(cb);
    ARG_UNUSED(pins);
    atomic_set(&button_pressed, 1);
    k_sem_give(&wake);
}

static void on_drive(void *ctx, uint8_t amplitude)
{
    ARG_UNUSED(ctx);
    motor_set(amplitude);
}

static void on_cue(void *ctx, const hc_cue *cue)
{
    ARG_UNUSED(ctx);
    printk("cue %s at %u ms, step %u\n", hc_cue_name(cue->kind), (unsigned)cue->t_ms, cue->step);
}

static hc_player player;

int main(void)
{
    const hc_callbacks callbacks = {.drive = on_drive, .segment = NULL, .cue = on_cue, .ctx = NULL};
    hc_table_error error;
    uint32_t last;

    if (motor_init() != 0) {
        printk("motor driver not ready\n");
        return 0;
    }
    if (gpio_is_ready_dt(&button) && gpio_pin_configure_dt(&button, GPIO_INPUT) == 0 &&
        gpio_pin_interrupt_configure_dt(&button, GPIO_INT_EDGE_TO_ACTIVE) == 0) {
        gpio_init_callback(&button_cb, on_button, BIT(button.pin));
        gpio_add_callback(button.port, &button_cb);
    }
    error = hc_load(&player, routine_table, sizeof routine_table, &callbacks);
    if (error != HC_OK) {
        printk("table refused: %s\n", hc_table_error_name(error));
        return 0;
    }
    hc_start(&player);
    last = k_uptime_get_32();
    for (;;) {
        uint32_t wait = hc_ms_until_due(&player);
        uint32_t now;
        (void)k_sem_take(&wake, wait == UINT32_MAX ? K_FOREVER : K_MSEC(wait));
        now = k_uptime_get_32();
        hc_tick(&player, now - last); /* unsigned difference: safe across the 49.7-day wrap */
        last = now;
        if (atomic_set(&button_pressed, 0)) {
            hc_status status;
            hc_get_status(&player, &status);
            if (status.state == HC_WAITING) {
                hc_ack(&player); /* the wearer acknowledges the cue the band repeats (SPEC.md 12.10) */
            } else if (status.state == HC_RUNNING) {
                hc_pause(&player);
            } else if (status.state == HC_PAUSED) {
                hc_resume(&player);
            } else {
                hc_start(&player);
            }
        }
    }
    return 0;
}
