#pragma once
// libmosquitto, the Eclipse Mosquitto project's MQTT client library (Debian: libmosquitto-dev), and its MQTT v5
// protocol constants (property identifiers, protocol versions).
#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

/// A descriptor another thread makes readable (`yoloswap_mosquitto_wake`) to end the network thread's wait early:
/// non-blocking, closed on exec. -1 on failure (errno set).
static inline int yoloswap_mosquitto_wake_fd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

/// Makes `wake_fd` readable; a full counter (never in practice) already is.
static inline void yoloswap_mosquitto_wake(int wake_fd) {
    uint64_t one = 1;
    (void)!write(wake_fd, &one, sizeof one);
}

/// One turn of the network loop: what `mosquitto_loop` does, with poll(2) where it uses select(2). select cannot watch
/// a descriptor numbered FD_SETSIZE (1024) or more — `mosquitto_loop` then fails every turn with MOSQ_ERR_INVAL — and a
/// service with thousands of connections gets such numbers. `mosquitto_loop` also watches a socket pair of its own that
/// another thread's publication wakes it through; `wake_fd` does that here (the caller signals it after each call
/// that queues a packet from another thread). Waits at most `timeout_ms` for the socket or `wake_fd`, then reads what
/// came, writes what is queued, and runs the keep-alive (`mosquitto_loop_misc`). Returns a MOSQ_ERR_* code, as
/// `mosquitto_loop` does: anything but success means the connection is gone.
static inline int yoloswap_mosquitto_loop_poll(struct mosquitto *mosq, int wake_fd, int timeout_ms) {
    int sock = mosquitto_socket(mosq);
    if (sock < 0) return MOSQ_ERR_NO_CONN;
    struct pollfd fds[2] = {
        {.fd = sock, .events = (short)(POLLIN | (mosquitto_want_write(mosq) ? POLLOUT : 0))},
        {.fd = wake_fd, .events = POLLIN},
    };
    if (poll(fds, 2, timeout_ms) < 0) return errno == EINTR ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ERRNO;
    // A writable socket reads too: during a TLS handshake `mosquitto_loop_read` drives it (`mosquitto_loop` calls
    // the handshake on a writable socket), and otherwise it finds nothing to read (EAGAIN, success).
    if (fds[0].revents & (POLLIN | POLLOUT | POLLHUP | POLLERR | POLLNVAL)) {
        int rc = mosquitto_loop_read(mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(mosq) < 0) return rc;
    }
    if (fds[1].revents & POLLIN) {
        uint64_t count;
        (void)!read(wake_fd, &count, sizeof count);
    }
    if (mosquitto_want_write(mosq)) {
        int rc = mosquitto_loop_write(mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(mosq) < 0) return rc;
    }
    return mosquitto_loop_misc(mosq);
}
