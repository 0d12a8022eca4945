/* Listening sockets and socket-address text. */
#ifndef SG_NET_LISTENER_H
#define SG_NET_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

/* Splits "HOST:PORT" or "[V6]:PORT" into |host| and |port|. Returns 0 or -1. */
int sg_addr_split(const char *addr, char *host, size_t host_cap, char *port, size_t port_cap);

/* Opens a non-blocking listening TCP socket on |addr| ("127.0.0.1:50051", "[::1]:0",
 * "0.0.0.0:50051"). Returns the descriptor, or -1 with a message in |err|. */
int sg_listener_open(const char *addr, char *err, size_t errlen);

/* Writes "ip:port" (IPv6 as "[ip]:port") for |sa| into |out|. */
void sg_addr_format(const struct sockaddr *sa, char *out, size_t cap);

/* The address |fd| is bound to, as sg_addr_format writes it (shows the port chosen for :0). */
void sg_listener_address(int fd, char *out, size_t cap);

#endif
