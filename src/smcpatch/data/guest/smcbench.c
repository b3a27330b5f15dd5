// SPDX-License-Identifier: GPL-2.0-only
/*
 * smcbench: guest-side helper of the SMC handshake benchmark (smcpatch).
 *
 * Built twice from this one file by the host (src/smcpatch/benchmark.py):
 *   - libsmcbench.so: the timed client loop, called from pyperf through ctypes
 *     (CPython refuses AF_SMC addresses, so the sockets are driven from C);
 *   - smcbench (with -DSMCB_MAIN): the server and the BPF loader.
 *
 * Modes:
 *   smcr  (0) AF_SMC client -> AF_SMC server: a real SMC-R (v2 over Soft-RoCE) connection.
 *   clcv1 (1) TCP client whose SYN carries the SMC TCP option (added by a sock_ops BPF program
 *             attached to the root cgroup, for the clcv1 port only) sends a hand-made SMC-R v1 CLC
 *             proposal whose prefix matches 127.0.0.0/8; the AF_SMC server runs
 *             smc_clc_prfx_match(), declines (no v1 RoCE device) and falls back to TCP.
 *   tcp   (2) plain TCP client -> plain TCP server.
 * Every connection: connect, [clcv1: proposal, read decline], 1-byte ping-pong, close.
 * Timed per connection is the handshake: smcr and tcp the connect() call (for AF_SMC it returns
 * once the whole SMC-R CLC handshake and link confirmation are done), clcv1 the CLC exchange from
 * writing the proposal to reading the server's decline (the server's v1 CLC processing, which
 * includes smc_clc_prfx_match). The rest of the connection is done but not timed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_SMC
#define AF_SMC 43
#endif

enum { MODE_SMCR = 0, MODE_CLCV1 = 1, MODE_TCP = 2 };

#define SMC_CLC_PROPOSAL 0x01
#define SMC_CLC_DECLINE 0x04
static const uint8_t SMCR_EYECATCHER[4] = {0xE2, 0xD4, 0xC3, 0xD9}; /* EBCDIC "SMCR" */

static void set_err(char *err, int errlen, const char *what)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s: %s", what, strerror(errno));
}

/* where clients connect and what prefix their proposal carries: 127.0.0.1 and 127.0.0.0/8
 * unless smcb_set_target() says otherwise (the race runs over a veth pair) */
static uint32_t target_addr = 0x7f000001u; /* host order */
static uint8_t target_prefix_len = 8;

void smcb_set_target(const char *ip, int prefix_len)
{
	struct in_addr in;

	if (inet_pton(AF_INET, ip, &in) == 1)
		target_addr = ntohl(in.s_addr);
	target_prefix_len = (uint8_t)prefix_len;
}

static void loopback(struct sockaddr_in *a, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	a->sin_addr.s_addr = htonl(target_addr);
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ECONNRESET;
			return -1;
		}
		got += (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		ssize_t n = write(fd, (const char *)buf + put, len - put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		put += (size_t)n;
	}
	return 0;
}

/*
 * SMC-R v1 CLC proposal (net/smc/smc_clc.h, RFC 7609):
 *   smc_clc_msg_hdr (8) | smc_clc_msg_local (30) | iparea_offset (2)
 *   | smc_clc_msg_proposal_prefix (8) | trailer eyecatcher (4)            = 52 bytes
 * iparea_offset 0: the prefix area follows the proposal directly (no SMC-D area).
 */
#define PROPOSAL_LEN 52
static void build_proposal(uint8_t *p)
{
	memset(p, 0, PROPOSAL_LEN);
	memcpy(p, SMCR_EYECATCHER, 4);
	p[4] = SMC_CLC_PROPOSAL;
	p[5] = 0;
	p[6] = PROPOSAL_LEN;
	p[7] = (1 << 4) | 0; /* version 1, typev2 0, typev1 SMC_TYPE_R (0) */
	/* lcl.id_for_peer[8] */
	p[8] = 0x00; p[9] = 0x01; p[10] = 0x02; p[11] = 0x03;
	p[12] = 0x04; p[13] = 0x05; p[14] = 0x06; p[15] = 0x07;
	/* lcl.gid[16]: a RoCE v1 style link-local GID (no such device on the server) */
	p[16] = 0xfe; p[17] = 0x80;
	p[24] = 0x02; p[25] = 0x00; p[26] = 0x5e; p[27] = 0xff; p[28] = 0xfe; p[29] = 0x00;
	p[30] = 0x00; p[31] = 0x01;
	/* lcl.mac[6] */
	p[32] = 0x02; p[33] = 0x00; p[34] = 0x5e; p[35] = 0x00; p[36] = 0x00; p[37] = 0x01;
	/* iparea_offset = 0 at 38..39 */
	/* prefix: outgoing_subnet (127.0.0.0 by default), prefix_len, reserved[2], ipv6 cnt 0 */
	{
		uint32_t mask = target_prefix_len ? ~0u << (32 - target_prefix_len) : 0;
		uint32_t net = target_addr & mask;

		p[40] = net >> 24; p[41] = (net >> 16) & 0xff; p[42] = (net >> 8) & 0xff;
		p[43] = net & 0xff;
	}
	p[44] = target_prefix_len;
	memcpy(p + 48, SMCR_EYECATCHER, 4);
}

static uint32_t expected_decline = 0x03030000u; /* SMC_CLC_DECL_NOSMCDEV */

void smcb_set_expected_decline(uint32_t code)
{
	expected_decline = code;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int one_connection(int mode, int port, const uint8_t *proposal, int64_t *timed,
			  char *err, int errlen)
{
	int64_t t0;
	struct sockaddr_in a;
	char c = 'x';
	int one = 1;
	int fd;

	loopback(&a, port);
	fd = socket(mode == MODE_SMCR ? AF_SMC : AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		set_err(err, errlen, "socket");
		return -1;
	}
	if (mode != MODE_SMCR)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	t0 = now_ns();
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		set_err(err, errlen, "connect");
		goto fail;
	}
	if (mode != MODE_CLCV1)
		*timed += now_ns() - t0;
	if (mode == MODE_CLCV1) {
		uint8_t d[64];
		uint16_t len;
		uint32_t diag;

		t0 = now_ns();
		if (write_full(fd, proposal, PROPOSAL_LEN) < 0) {
			set_err(err, errlen, "write proposal");
			goto fail;
		}
		if (read_full(fd, d, 8) < 0) {
			set_err(err, errlen, "read CLC header (server did not answer the proposal)");
			goto fail;
		}
		len = (uint16_t)((d[5] << 8) | d[6]);
		if (memcmp(d, SMCR_EYECATCHER, 4) || d[4] != SMC_CLC_DECLINE || len < 24 ||
		    len > sizeof(d)) {
			if (err)
				snprintf(err, errlen,
					 "expected a CLC decline, got type %u length %u", d[4], len);
			goto fail_noerrno;
		}
		if (read_full(fd, d + 8, len - 8) < 0) {
			set_err(err, errlen, "read CLC decline");
			goto fail;
		}
		*timed += now_ns() - t0;
		diag = ((uint32_t)d[16] << 24) | ((uint32_t)d[17] << 16) | ((uint32_t)d[18] << 8) | d[19];
		if (diag != expected_decline) {
			if (err)
				snprintf(err, errlen, "server declined with 0x%08x, expected 0x%08x",
					 diag, expected_decline);
			goto fail_noerrno;
		}
	}
	if (write_full(fd, &c, 1) < 0) {
		set_err(err, errlen, "write ping");
		goto fail;
	}
	if (read_full(fd, &c, 1) < 0) {
		set_err(err, errlen, "read pong");
		goto fail;
	}
	close(fd);
	return 0;
fail:
fail_noerrno:
	close(fd);
	return -1;
}

/*
 * Client loop: `loops` connections; returns the summed handshake time in ns (see the top of the
 * file), or -1 with err filled. *total_ns (if not NULL) gets the wall time of the whole loop.
 */
int64_t smcb_run2(int mode, int port, int64_t loops, int64_t *total_ns, char *err, int errlen)
{
	uint8_t proposal[PROPOSAL_LEN];
	int64_t t0, i, timed = 0;

	build_proposal(proposal);
	t0 = now_ns();
	for (i = 0; i < loops; i++) {
		if (one_connection(mode, port, proposal, &timed, err, errlen) < 0)
			return -1;
	}
	if (total_ns)
		*total_ns = now_ns() - t0;
	return timed;
}

int64_t smcb_run(int mode, int port, int64_t loops, char *err, int errlen)
{
	return smcb_run2(mode, port, loops, NULL, err, errlen);
}

/*
 * The race's client: clcv1 connections for `seconds`, each with 1 s socket timeouts, going on
 * whatever happens to one (the device under it is deleted and recreated meanwhile).
 * counts[0] attempts, [1] answered with the expected decline, [2] failed; returns 0.
 */
static volatile int race_stop;

void smcb_race_stop(void)
{
	race_stop = 1;
}

int smcb_race(int port, double seconds, int64_t *counts)
{
	uint8_t proposal[PROPOSAL_LEN];
	struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	int64_t end = now_ns() + (int64_t)(seconds * 1e9);

	race_stop = 0;
	counts[0] = counts[1] = counts[2] = 0;
	build_proposal(proposal);
	while (!race_stop && now_ns() < end) {
		struct sockaddr_in a;
		uint8_t d[64];
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0)
			return -1;
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		loopback(&a, port);
		counts[0]++;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
		    write_full(fd, proposal, PROPOSAL_LEN) == 0 && read_full(fd, d, 8) == 0 &&
		    !memcmp(d, SMCR_EYECATCHER, 4) && d[4] == SMC_CLC_DECLINE) {
			counts[1]++;
		} else {
			struct timespec pause = {.tv_sec = 0, .tv_nsec = 2000000};

			counts[2]++;
			nanosleep(&pause, NULL); /* no device: don't spin the CPU the server needs */
		}
		close(fd);
	}
	return 0;
}

#ifdef SMCB_MAIN

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static int parse_mode(const char *s)
{
	if (!strcmp(s, "smcr"))
		return MODE_SMCR;
	if (!strcmp(s, "clcv1"))
		return MODE_CLCV1;
	if (!strcmp(s, "tcp"))
		return MODE_TCP;
	fprintf(stderr, "smcbench: unknown mode %s\n", s);
	exit(2);
}

/* The server's read of a client's ping: like read_full, but SIGTERM ends it (a client that never
 * sends its byte must not keep the server from stopping). */
static int read_ping(int fd, char *c)
{
	for (;;) {
		ssize_t n = read(fd, c, 1);

		if (n == 1)
			return 0;
		if (n < 0 && errno == EINTR && !stop)
			continue;
		return -1;
	}
}

/* Serve until SIGTERM; print "ready" once listening and "served N" at the end. */
static int serve(int mode, int port)
{
	struct sigaction sa;
	struct sockaddr_in a;
	long long served = 0, failed = 0;
	int one = 1;
	int lfd;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term; /* no SA_RESTART: accept() returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	lfd = socket(mode == MODE_TCP ? AF_INET : AF_SMC, SOCK_STREAM, 0);
	if (lfd < 0) {
		perror("smcbench: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	loopback(&a, port);
	if (getenv("SMCB_BIND")) /* the race: any address of the server's namespace */
		inet_pton(AF_INET, getenv("SMCB_BIND"), &a.sin_addr);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 128) < 0) {
		perror("smcbench: bind/listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		char c;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (getenv("SMCB_BIND") && errno != EBADF && errno != EINVAL) {
				failed++; /* the race: a connection lost with its device */
				continue;
			}
			perror("smcbench: accept");
			return 1;
		}
		if (getenv("SMCB_BIND")) { /* a peer whose device vanished never answers */
			struct timeval tv = {.tv_sec = 2, .tv_usec = 0};

			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		}
		if (read_ping(fd, &c) == 0 && write_full(fd, &c, 1) == 0)
			served++;
		else
			failed++;
		close(fd);
	}
	printf("served %lld failed %lld\n", served, failed);
	fflush(stdout);
	return 0;
}

/* ---- sock_ops BPF program, assembled by hand (no clang/bpftool/libbpf needed) ---- */

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ALU64_IMM(op, d, i) INSN(BPF_ALU64 | (op) | BPF_K, d, 0, 0, i)
#define LDX_W(d, s, o) INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_DW(d, s, o) INSN(BPF_STX | BPF_MEM | BPF_DW, d, s, o, 0)
#define JEQ_IMM(d, i, o) INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define JNE_IMM(d, i, o) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, o, i)
#define JNE32_IMM(d, i, o) INSN(BPF_JMP32 | BPF_JNE | BPF_K, d, 0, o, i)
#define JA(o) INSN(BPF_JMP | BPF_JA, 0, 0, o, 0)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define LD_IMM64_LO(d, v) INSN(BPF_LD | BPF_DW | BPF_IMM, d, 0, 0, (int32_t)(uint32_t)(v))
#define LD_IMM64_HI(v) INSN(0, 0, 0, 0, (int32_t)(uint32_t)((uint64_t)(v) >> 32))

#define OFF(f) ((int16_t)offsetof(struct bpf_sock_ops, f))

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/*
 * For active opens to 127.0.0.1:<port> only: enable the header-option callbacks in
 * TCP_CONNECT_CB, reserve 8 bytes on the pure SYN and write the SMC option
 * (kind 254, length 8, E2 D4 C3 D9, 2 pad bytes) into it.
 */
static int attach_synopt(const char *cgroup, int port)
{
	/* remote_port in bpf_sock_ops: the network-order port in the upper 16 bits (LE host) */
	uint32_t want_port = (uint32_t)htons((uint16_t)port) << 16;
	/* option bytes FE 08 E2 D4 C3 D9 00 00 as a little-endian u64 */
	uint64_t opt = 0x0000D9C3D4E208FEull;
	struct bpf_insn prog[] = {
		/* 0 */ MOV64_REG(BPF_REG_6, BPF_REG_1),
		/* 1 */ LDX_W(BPF_REG_2, BPF_REG_6, OFF(op)),
		/* 2 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_TCP_CONNECT_CB, 5),   /* -> 8 */
		/* 3 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_HDR_OPT_LEN_CB, 11),  /* -> 15 */
		/* 4 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_WRITE_HDR_OPT_CB, 18), /* -> 23 */
		/* 5 */ JA(0),
		/* 6 */ MOV64_IMM(BPF_REG_0, 1),
		/* 7 */ EXIT(),
		/* CONNECT */
		/* 8 */ LDX_W(BPF_REG_2, BPF_REG_6, OFF(remote_port)),
		/* 9 */ JNE32_IMM(BPF_REG_2, (int32_t)want_port, -4),          /* -> 6 */
		/* 10 */ LDX_W(BPF_REG_2, BPF_REG_6, OFF(bpf_sock_ops_cb_flags)),
		/* 11 */ ALU64_IMM(BPF_OR, BPF_REG_2, BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG),
		/* 12 */ MOV64_REG(BPF_REG_1, BPF_REG_6),
		/* 13 */ CALL(BPF_FUNC_sock_ops_cb_flags_set),
		/* 14 */ JA(-9),                                                 /* -> 6 */
		/* LEN */
		/* 15 */ LDX_W(BPF_REG_2, BPF_REG_6, OFF(skb_tcp_flags)),
		/* 16 */ ALU64_IMM(BPF_AND, BPF_REG_2, 0x12),
		/* 17 */ JNE_IMM(BPF_REG_2, 0x02, -12),                          /* -> 6 */
		/* 18 */ MOV64_REG(BPF_REG_1, BPF_REG_6),
		/* 19 */ MOV64_IMM(BPF_REG_2, 8),
		/* 20 */ MOV64_IMM(BPF_REG_3, 0),
		/* 21 */ CALL(BPF_FUNC_reserve_hdr_opt),
		/* 22 */ JA(-17),                                                /* -> 6 */
		/* WRITE */
		/* 23 */ LDX_W(BPF_REG_2, BPF_REG_6, OFF(skb_tcp_flags)),
		/* 24 */ ALU64_IMM(BPF_AND, BPF_REG_2, 0x12),
		/* 25 */ JNE_IMM(BPF_REG_2, 0x02, -20),                          /* -> 6 */
		/* 26 */ LD_IMM64_LO(BPF_REG_2, opt),
		/* 27 */ LD_IMM64_HI(opt),
		/* 28 */ STX_DW(BPF_REG_10, BPF_REG_2, -8),
		/* 29 */ MOV64_REG(BPF_REG_1, BPF_REG_6),
		/* 30 */ MOV64_REG(BPF_REG_2, BPF_REG_10),
		/* 31 */ ALU64_IMM(BPF_ADD, BPF_REG_2, -8),
		/* 32 */ MOV64_IMM(BPF_REG_3, 8),
		/* 33 */ MOV64_IMM(BPF_REG_4, 0),
		/* 34 */ CALL(BPF_FUNC_store_hdr_opt),
		/* 35 */ JA(-30),                                                /* -> 6 */
	};
	static char log[65536];
	union bpf_attr attr;
	int pfd, cfd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCK_OPS;
	attr.insns = (uint64_t)(uintptr_t)prog;
	attr.insn_cnt = sizeof(prog) / sizeof(prog[0]);
	attr.license = (uint64_t)(uintptr_t)"GPL";
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.log_size = sizeof(log);
	attr.log_level = 1;
	strncpy(attr.prog_name, "smc_synopt", sizeof(attr.prog_name) - 1);
	pfd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (pfd < 0) {
		fprintf(stderr, "smcbench: BPF_PROG_LOAD: %s\n%s\n", strerror(errno), log);
		return 1;
	}
	cfd = open(cgroup, O_RDONLY | O_DIRECTORY);
	if (cfd < 0) {
		fprintf(stderr, "smcbench: open %s: %s\n", cgroup, strerror(errno));
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cfd;
	attr.attach_bpf_fd = (uint32_t)pfd;
	attr.attach_type = BPF_CGROUP_SOCK_OPS;
	if (sys_bpf(BPF_PROG_ATTACH, &attr) < 0) {
		fprintf(stderr, "smcbench: BPF_PROG_ATTACH: %s\n", strerror(errno));
		return 1;
	}
	printf("attached\n");
	return 0;
}

int main(int argc, char **argv)
{
	char err[256] = "";

	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(parse_mode(argv[2]), atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "attach-synopt"))
		return attach_synopt(argv[2], atoi(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "client")) {
		int64_t ns = smcb_run(parse_mode(argv[2]), atoi(argv[3]), atoll(argv[4]), err,
				      sizeof(err));

		if (ns < 0) {
			fprintf(stderr, "smcbench: %s\n", err);
			return 1;
		}
		printf("%lld\n", (long long)ns);
		return 0;
	}
	fprintf(stderr,
		"usage: smcbench serve MODE PORT | attach-synopt CGROUP PORT | client MODE PORT N\n");
	return 2;
}
#endif
