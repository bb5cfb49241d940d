// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* stratumd's XDP steering program.
 *
 * NTP requests (UDP to the configured port, over Ethernet with up to two VLAN tags, IPv4 with or
 * without options, or IPv6 with no extension header) get a receive timestamp written into the XDP
 * metadata area (struct stratum_meta, meta.h) and are redirected to the AF_XDP socket bound to
 * the receive queue they arrived on. Everything else goes to the kernel untouched (XDP_PASS):
 * ARP, ICMP, TCP, other UDP ports, IPv4 fragments, IPv6 extension headers.
 *
 * For our port only: a request that is not addressed to this host (the interface's MAC, one of
 * the host's addresses in `local_v4`/`local_v6`), or whose source is one of this host's addresses
 * or broadcast addresses, goes to the kernel untouched (counted `not_ours`: the kernel forwards,
 * drops or answers it as it would without us) once the loader has switched that check on in
 * `local_config`; a UDP length that cannot hold an NTP header (for mode 6, ntpq's, its 12-byte
 * control header: the workers hand an allowed source's to the ntpq thread), or that does not fit
 * inside the IP packet or the frame, is dropped (counted `malformed`); a source address in the deny tries is
 * dropped (counted `denied`). A request for a queue with no AF_XDP socket falls through to the
 * kernel (counted `no_socket`), its metadata written.
 *
 * Two entry points share one body: `stratum_steer` stamps with bpf_ktime_get_tai_ns() read at
 * entry; `stratum_steer_hw` first asks the NIC for its receive stamp through the XDP metadata
 * kfunc, which needs a device-bound program (BPF_F_XDP_DEV_BOUND_ONLY and the prog ifindex). The
 * loader (src/program/load.rs) loads exactly one of them. Mirrors: meta.h <-> src/meta.rs, the
 * counter indexes and map names here <-> src/program/maps.rs.
 *
 * steer() reads top to bottom: parse (the cursor helpers of parse.h, then what makes an IP header
 * a request's: parse_ipv4_request, parse_ipv6_request), the UDP port, then the checks that drop
 * (addressed_to_us, ntp_length_ok, source_denied), the stamp (write_meta) and the redirect.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "meta.h"
#include "parse.h"

/* Set by the loader before load (rodata: the verifier sees it as a constant). */
const volatile __u16 stratum_port = 123;

/* Smallest NTP header (no extension fields, no MAC). */
#define NTP_HEADER_LEN 48
#define CONTROL_HEADER_LEN 12
/* IPv4 flags + fragment offset: "more fragments" and the 13-bit offset. */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Counter slots (src/program/maps.rs reads them by index). */
enum stratum_counter {
	COUNTER_REDIRECTED = 0,
	COUNTER_PASSED = 1,
	COUNTER_MALFORMED = 2,
	COUNTER_NO_SOCKET = 3,
	COUNTER_DENIED = 4,
	COUNTER_NOT_OURS = 5,
	COUNTER_MAX = 6,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* One AF_XDP socket per receive queue, keyed by queue index. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Deny lists: longest-prefix-match tries on the source address, one per family. The key is the
 * kernel's LPM layout: prefix length in bits (host order) followed by the address bytes in network
 * order. The value is unused (a hit is a deny). */
struct deny_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct deny_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Both tries are alike but for the key: the kernel's LPM trie takes one key size per map. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny_v4_key);
	__type(value, __u8);
} deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny_v6_key);
	__type(value, __u8);
} deny_v6 SEC(".maps");

/* This host's addresses, every interface's (lo included: anycast addresses live there), kept in
 * step by the server. The value says what the address is to us. */
enum local_kind {
	LOCAL_UNICAST = 1,
	LOCAL_BROADCAST = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* network order */
	__type(value, __u8);
} local_v4 SEC(".maps");

struct local_v6_key {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct local_v6_key);
	__type(value, __u8);
} local_v6 SEC(".maps");

/* Whether the "addressed to us" check is on, and the interface's MAC. Off (all zero) until the
 * server has filled local_v4/local_v6: a load generator that answers for many simulated clients
 * leaves it off. */
struct local_config {
	__u8 enforce;
	__u8 mac[6];
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct local_config);
} local_config SEC(".maps");

/* XDP metadata kfunc (kernel >= 6.3): the NIC's receive stamp; 0 on success, -ENODATA or
 * -EOPNOTSUPP where the driver has none. Callable only from device-bound programs. */
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym __weak;

/* What a request's IP header tells the checks after the UDP header: how much IP payload there
 * is, the source address as its deny trie keys it, and the destination (only the `v6` fields, or
 * only the IPv4 ones, are filled). */
struct ip_request {
	/* Bytes of IP payload the IP header says there are (counted from the UDP header). */
	__u32 payload_len;
	bool v6;
	struct deny_v4_key key4;
	struct deny_v6_key key6;
	__u32 daddr4;
	struct local_v6_key daddr6;
};

static __always_inline void count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &slot);

	if (value)
		*value += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline int pass(void)
{
	count(COUNTER_PASSED);
	return XDP_PASS;
}

static __always_inline int drop(__u32 why)
{
	count(why);
	return XDP_DROP;
}

/* An IPv4 header that can carry a request: UDP, not a fragment (fragments are the kernel's to
 * reassemble). 0, or -1 for a frame that is not ours. */
static __always_inline int parse_ipv4_request(struct hdr_cursor *c, void *data_end, struct ip_request *req)
{
	struct iphdr *ip;

	if (parse_iphdr(c, data_end, &ip) != IPPROTO_UDP)
		return -1;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -1;
	__u32 ihl = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	/* A total length shorter than the header leaves no payload: 0, malformed later. */
	req->payload_len = tot_len > ihl ? tot_len - ihl : 0;
	req->v6 = false;
	req->key4.prefixlen = 32;
	__builtin_memcpy(req->key4.addr, &ip->saddr, 4);
	req->daddr4 = ip->daddr;
	return 0;
}

/* An IPv6 header that can carry a request: UDP right after the fixed header (extension headers
 * go to the kernel). 0, or -1 for a frame that is not ours. */
static __always_inline int parse_ipv6_request(struct hdr_cursor *c, void *data_end, struct ip_request *req)
{
	struct ipv6hdr *ip6;

	if (parse_ip6hdr(c, data_end, &ip6) != IPPROTO_UDP)
		return -1;
	req->payload_len = bpf_ntohs(ip6->payload_len);
	req->v6 = true;
	req->key6.prefixlen = 128;
	__builtin_memcpy(req->key6.addr, &ip6->saddr, 16);
	__builtin_memcpy(req->daddr6.addr, &ip6->daddr, 16);
	return 0;
}

/* A UDP length that holds an NTP header (a mode 6 control header for a mode 6 request: ntpq's
 * are 12 bytes, and the workers hand an allowed source's to the ntpq thread) and lies inside both
 * the IP packet and the frame. */
static __always_inline bool ntp_length_ok(struct udphdr *udp, __u32 udp_len, __u32 ip_payload_len,
					  void *data_end)
{
	__u8 *first = (void *)(udp + 1);
	__u32 min = NTP_HEADER_LEN;

	if ((void *)(first + 1) <= data_end && (*first & 7) == 6)
		min = CONTROL_HEADER_LEN;
	if (udp_len < sizeof(*udp) + min || udp_len > ip_payload_len)
		return false;
	return (void *)udp + udp_len <= data_end;
}

/* What `addr` is to this host: LOCAL_UNICAST, LOCAL_BROADCAST, or 0 (someone else's). */
static __always_inline __u8 local_kind_v4(__u32 addr)
{
	__u8 *kind = bpf_map_lookup_elem(&local_v4, &addr);

	return kind ? *kind : 0;
}

static __always_inline __u8 local_kind_v6(struct local_v6_key *addr)
{
	__u8 *kind = bpf_map_lookup_elem(&local_v6, addr);

	return kind ? *kind : 0;
}

/* Sent to this host: to the interface's MAC and to one of its addresses, and not from one of its
 * own or broadcast addresses (a spoofed source the kernel would call martian). Always true while
 * the check is off. */
static __always_inline bool addressed_to_us(struct ethhdr *eth, struct ip_request *req)
{
	__u32 zero = 0;
	struct local_config *cfg = bpf_map_lookup_elem(&local_config, &zero);

	if (!cfg || !cfg->enforce)
		return true;
	for (int i = 0; i < 6; i++) {
		if (eth->h_dest[i] != cfg->mac[i])
			return false;
	}
	if (req->v6) {
		struct local_v6_key src = {};
		__builtin_memcpy(src.addr, req->key6.addr, 16);
		return local_kind_v6(&req->daddr6) == LOCAL_UNICAST && local_kind_v6(&src) == 0;
	}
	__u32 src;
	__builtin_memcpy(&src, req->key4.addr, 4);
	return local_kind_v4(req->daddr4) == LOCAL_UNICAST && local_kind_v4(src) == 0;
}

static __always_inline bool source_denied(struct ip_request *req)
{
	return req->v6 ? bpf_map_lookup_elem(&deny_v6, &req->key6) != NULL
		       : bpf_map_lookup_elem(&deny_v4, &req->key4) != NULL;
}

/* Writes the receive stamp in front of the frame: the NIC's where the device-bound variant gets
 * one, else `rx_time_ns`, the TAI read at entry. Every packet pointer is invalid afterwards. A
 * driver without metadata support fails the adjust: the frame still goes to the socket, which
 * then sees no magic and reads its own clock. */
static __always_inline void write_meta(struct xdp_md *ctx, const bool hw, __u64 rx_time_ns)
{
	__u32 flags = STRATUM_META_TAI;

	if (hw && bpf_ksym_exists(bpf_xdp_metadata_rx_timestamp)) {
		__u64 stamp = 0;
		if (bpf_xdp_metadata_rx_timestamp(ctx, &stamp) == 0 && stamp != 0) {
			rx_time_ns = stamp;
			flags = STRATUM_META_HW;
		}
	}
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct stratum_meta)) == 0) {
		struct stratum_meta *meta = (void *)(long)ctx->data_meta;
		if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
			meta->rx_time_ns = rx_time_ns;
			meta->flags = flags;
			meta->magic = STRATUM_META_MAGIC;
		}
	}
}

/* To the AF_XDP socket of the frame's receive queue; with none there, to the kernel. */
static __always_inline int redirect(struct xdp_md *ctx)
{
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	count(action == XDP_REDIRECT ? COUNTER_REDIRECTED : COUNTER_NO_SOCKET);
	return action;
}

static __always_inline int steer(struct xdp_md *ctx, const bool hw)
{
	/* First thing: the software receive stamp, before any parsing. */
	__u64 rx_time_ns = bpf_ktime_get_tai_ns();
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor cursor = { .pos = (void *)(long)ctx->data };
	struct ip_request req = {};
	struct ethhdr *eth;
	struct udphdr *udp;

	int proto = parse_ethhdr(&cursor, data_end, &eth);
	if (proto < 0)
		return pass();
	proto = parse_vlan(&cursor, data_end, proto);
	if (proto == bpf_htons(ETH_P_IP)) {
		if (parse_ipv4_request(&cursor, data_end, &req) < 0)
			return pass();
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (parse_ipv6_request(&cursor, data_end, &req) < 0)
			return pass();
	} else {
		return pass();
	}
	int udp_len = parse_udphdr(&cursor, data_end, &udp);
	if (udp_len < 0 || udp->dest != bpf_htons(stratum_port))
		return pass();

	/* Someone else's request (a router, a bridge, a promiscuous NIC sees them): the kernel's. */
	if (!addressed_to_us(eth, &req)) {
		count(COUNTER_NOT_OURS);
		return XDP_PASS;
	}
	/* Ours from here on: anything not a plausible NTP request is dropped, never passed. */
	if (!ntp_length_ok(udp, udp_len, req.payload_len, data_end))
		return drop(COUNTER_MALFORMED);
	if (source_denied(&req))
		return drop(COUNTER_DENIED);
	write_meta(ctx, hw, rx_time_ns);
	return redirect(ctx);
}

SEC("xdp")
int stratum_steer(struct xdp_md *ctx)
{
	return steer(ctx, false);
}

SEC("xdp")
int stratum_steer_hw(struct xdp_md *ctx)
{
	return steer(ctx, true);
}

/* GPL-compatible: kfunc calls need it. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
