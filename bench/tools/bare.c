/* bare: the machine-limit row of the benchmark. One thread, one UDP socket,
 * recvmmsg a batch, turn each query into a canned answer in place (QR+AA, one
 * A record 192.0.2.1 after the question, the query's OPT echoed), sendmmsg the
 * batch. No parsing beyond skipping the question name; no per-query state.
 * Build: cc -O2 -o bare bare.c    Run: bare 127.0.0.1 15353 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUFSZ 1500

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: bare ADDR PORT\n"); return 1; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int rcv = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("bind"); return 2; }
    fprintf(stderr, "listening proto=udp addr=%s:%s\n", argv[1], argv[2]);
    static unsigned char in[BATCH][BUFSZ], out[BATCH][BUFSZ];
    static struct sockaddr_in peer[BATCH];
    static struct iovec iin[BATCH], iout[BATCH];
    static struct mmsghdr rm[BATCH], sm[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iin[i].iov_base = in[i]; iin[i].iov_len = BUFSZ;
        rm[i].msg_hdr.msg_iov = &iin[i]; rm[i].msg_hdr.msg_iovlen = 1;
        rm[i].msg_hdr.msg_name = &peer[i];
        iout[i].iov_base = out[i];
        sm[i].msg_hdr.msg_iov = &iout[i]; sm[i].msg_hdr.msg_iovlen = 1;
        sm[i].msg_hdr.msg_name = &peer[i]; sm[i].msg_hdr.msg_namelen = sizeof peer[i];
    }
    static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1};
    for (;;) {
        for (int i = 0; i < BATCH; i++) rm[i].msg_hdr.msg_namelen = sizeof peer[i];
        int n = recvmmsg(fd, rm, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        int k = 0;
        for (int i = 0; i < n; i++) {
            unsigned char *q = in[i], *r = out[k];
            size_t len = rm[i].msg_len, p = 12;
            if (len < 17 || (q[2] & 0x80)) continue;
            while (p < len && q[p] != 0) p += q[p] + 1; /* qname labels */
            p += 5;                                    /* root, qtype, qclass */
            if (p > len || len - p + 12 + sizeof rr > BUFSZ) continue;
            memcpy(r, q, p);
            r[2] = 0x84 | (q[2] & 0x01); r[3] = 0;      /* QR AA (RD copied), NOERROR */
            r[6] = 0; r[7] = 1; r[8] = 0; r[9] = 0;     /* ANCOUNT 1, NSCOUNT 0; ARCOUNT as asked */
            memcpy(r + p, rr, sizeof rr);
            memcpy(r + p + sizeof rr, q + p, len - p);  /* the OPT (if any) echoed */
            iout[k].iov_len = len + sizeof rr;
            sm[k].msg_hdr.msg_name = &peer[i];
            k++;
        }
        if (k > 0) sendmmsg(fd, sm, k, 0);
    }
}
