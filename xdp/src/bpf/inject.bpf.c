// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* The load generator's request injector (stratum-bench `load --engine xdp --tx inject`).
 *
 * Never attached to an interface: user space runs it with BPF_PROG_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES over one request frame (a prebuilt Ethernet + IPv4 or IPv6 + UDP +
 * NTP client request, no VLAN tag). A run that returns XDP_TX transmits its copy of the frame out
 * of the context's ingress interface through the driver's ndo_xdp_xmit: no socket buffer is
 * allocated and no queueing discipline runs, so one core makes several million requests a second.
 *
 * Setting up and tearing down such a BPF_PROG_RUN costs the kernel tens of milliseconds (its page
 * pool), so a generator thread makes one call per load step and the program paces itself: a run
 * before the next request is due returns XDP_DROP at once (the kernel recycles the page), and the
 * thread spins in the kernel at the lowest priority until the step ends and it is interrupted by a
 * signal. As in the other engines, requests go in batches of 64 back to back, batch k due at
 * start + 64k * 1e9 / rate (exact integers, so no drift); a program that fell behind sends what it
 * owes at once; past `limit` requests it sends nothing. next_seq starts at a multiple of 64.
 *
 * A thread names its slot by the context's rx_queue_index and owns it: it writes the slot before
 * the call, the program writes it during the call, on that thread's CPU only. Per request the
 * program writes only what varies (the kernel may hand it the page as the template left it or as
 * the last run left it):
 *   - the source address (IPv4) or its last 32 bits (IPv6): client_base + client_next, which
 *     rotates over client_count clients;
 *   - the NTP transmit timestamp: (nonce << 32) | next_seq, which names the request;
 *   - the IPv4 header checksum and the UDP checksum, from the partial sums user space computed
 *     over everything else.
 * At every 64th request (the first of a batch of the generator's send book) it records the batch
 * number and bpf_ktime_get_tai_ns() in the slot's clock ring: the batch's T1, read before any of
 * its frames is built, so a reply's round trip never comes out shorter than it was.
 *
 * Mirrors: struct inject_slot, struct batch_clock and the constants here <-> src/inject.rs.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_SLOTS 16
/* Requests per batch of the generator's send book; one clock reading a batch. */
#define BATCH 64
/* Batch clock readings kept per slot (2^14 batches: 1 M requests). */
#define CLOCK_RING 16384
#define NS_PER_S 1000000000ULL

/* Fixed layouts of the request frame (Ethernet II, no VLAN tag, no IP options). */
#define ETH_LEN 14
#define V4_SOURCE (ETH_LEN + 12)
#define V4_IP_CHECKSUM (ETH_LEN + 10)
#define V4_UDP (ETH_LEN + 20)
#define V6_SOURCE_LOW (ETH_LEN + 8 + 12)
#define V6_UDP (ETH_LEN + 40)
#define UDP_CHECKSUM 6
#define NTP_TRANSMIT (8 + 40)
#define V4_FRAME_LEN (V4_UDP + 8 + 48)
#define V6_FRAME_LEN (V6_UDP + 8 + 48)

struct inject_slot {
	/* Requests a second (0: as fast as possible) and the most this step may make. */
	__u64 rate;
	__u64 limit;
	/* CLOCK_TAI (ns) of the step's first run (0 until then). */
	__u64 start_tai_ns;
	/* Requests made in this step. */
	__u64 made;
	__u32 nonce;
	__u32 next_seq;
	__u32 client_base;
	__u32 client_next;
	__u32 client_count;
	/* 1: IPv4 layout, 0: IPv6. */
	__u32 ipv4;
	/* Folded ones'-complement sums of the fixed parts (see src/inject.rs). */
	__u32 ip_sum;
	__u32 udp_sum;
};  /* 64 bytes: a slot is a cache line of its own, written by one CPU only. */

/* T1 of a batch of BATCH requests. */
struct batch_clock {
	__u64 batch;
	__u64 tai_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct inject_slot);
} inject_slots SEC(".maps");

/* Slot i's ring is entries [i * CLOCK_RING, (i + 1) * CLOCK_RING). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_SLOTS * CLOCK_RING);
	__type(key, __u32);
	__type(value, struct batch_clock);
} inject_clocks SEC(".maps");

static __always_inline __u32 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* The sum of the four big-endian 16-bit words of a 64-bit value (host order). */
static __always_inline __u32 sum64(__u64 v)
{
	return (__u32)(v >> 48) + (__u32)((v >> 32) & 0xffff) + (__u32)((v >> 16) & 0xffff) + (__u32)(v & 0xffff);
}

static __always_inline __u32 sum32(__u32 v)
{
	return (v >> 16) + (v & 0xffff);
}

static __always_inline void put_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

SEC("xdp")
int stratum_inject(struct xdp_md *ctx)
{
	__u32 key = ctx->rx_queue_index;
	struct inject_slot *slot = bpf_map_lookup_elem(&inject_slots, &key);
	if (!slot)
		return XDP_ABORTED;
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;

	/* A frame of the wrong size is a bug of the caller's: abort before counting anything. */
	if (data + (slot->ipv4 ? V4_FRAME_LEN : V6_FRAME_LEN) > end)
		return XDP_ABORTED;

	__u64 made = slot->made;
	if (made >= slot->limit)
		return XDP_DROP;
	__u32 seq = slot->next_seq;
	if (seq % BATCH == 0) {
		/* A batch starts: is it due? (Its requests then go back to back.) */
		__u64 now = bpf_ktime_get_tai_ns();
		if (slot->start_tai_ns == 0)
			slot->start_tai_ns = now;
		else if (slot->rate && now < slot->start_tai_ns + made * NS_PER_S / slot->rate)
			return XDP_DROP;
		__u32 at = key * CLOCK_RING + (seq / BATCH) % CLOCK_RING;
		struct batch_clock *clock = bpf_map_lookup_elem(&inject_clocks, &at);
		if (clock) {
			clock->batch = seq / BATCH;
			clock->tai_ns = now;
		}
	}
	slot->next_seq = seq + 1;
	slot->made = made + 1;
	__u32 client = slot->client_base + slot->client_next;
	__u32 next = slot->client_next + 1;
	slot->client_next = next >= slot->client_count ? 0 : next;
	__u64 transmit = ((__u64)slot->nonce << 32) | seq;

	__u32 udp_sum = slot->udp_sum + sum32(client) + sum64(transmit);
	__u8 *udp;
	if (slot->ipv4) {
		if (data + V4_FRAME_LEN > end)
			return XDP_ABORTED;
		put_be32(data + V4_SOURCE, client);
		put_be16(data + V4_IP_CHECKSUM, ~fold(slot->ip_sum + sum32(client)));
		udp = data + V4_UDP;
	} else {
		if (data + V6_FRAME_LEN > end)
			return XDP_ABORTED;
		put_be32(data + V6_SOURCE_LOW, client);
		udp = data + V6_UDP;
	}
	put_be32(udp + NTP_TRANSMIT, transmit >> 32);
	put_be32(udp + NTP_TRANSMIT + 4, transmit);
	__u16 checksum = ~fold(udp_sum);
	/* Zero means "no checksum" (RFC 768): send its ones'-complement twin. */
	put_be16(udp + UDP_CHECKSUM, checksum ? checksum : 0xffff);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual MIT/GPL";
