/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Header parsing for XDP programs, in the shape the verifier accepts: a cursor walks the frame,
 * and each helper checks that its whole header lies before data_end before it reads a byte of
 * it, then moves the cursor past it. A helper returns what comes next (an EtherType or an IP
 * protocol, in the header's byte order) or a length, and -1 when the header is cut short or is
 * not what it claims to be; the cursor is then left where it was.
 *
 * Owns the wire layouts of Ethernet, VLAN tags, IPv4, IPv6 and UDP. No policy: no port, no map,
 * no counter, no verdict; what a -1 means is the program's to say (steer.bpf.c passes the frame
 * to the kernel).
 */
#ifndef STRATUM_PARSE_H
#define STRATUM_PARSE_H

#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
/* VLAN tags parsed at most (QinQ); a frame with more is not taken for IP. */
#ifndef VLAN_MAX_DEPTH
#define VLAN_MAX_DEPTH 2
#endif

/* Where parsing has got to in the frame. */
struct hdr_cursor {
	void *pos;
};

/* One 802.1Q or 802.1ad tag, after the EtherType that announced it. */
struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

static __always_inline bool proto_is_vlan(int proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* The Ethernet header. Returns its EtherType (network order). */
static __always_inline int parse_ethhdr(struct hdr_cursor *c, void *data_end, struct ethhdr **eth)
{
	struct ethhdr *h = c->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	c->pos = h + 1;
	*eth = h;
	return h->h_proto;
}

/* The VLAN tags that follow EtherType `proto`, up to VLAN_MAX_DEPTH of them. Returns the
 * EtherType after the last one parsed (network order): `proto` itself where there is no tag, a
 * VLAN EtherType where there are more tags than that. */
static __always_inline int parse_vlan(struct hdr_cursor *c, void *data_end, int proto)
{
	void *pos = c->pos;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!proto_is_vlan(proto))
			break;
		struct vlan_hdr *vlan = pos;
		if ((void *)(vlan + 1) > data_end)
			return -1;
		proto = vlan->encapsulated_proto;
		pos = vlan + 1;
	}
	c->pos = pos;
	return proto;
}

/* The IPv4 header with its options (version 4, a header length of at least 20 bytes, all of it
 * in the frame). Returns the IP protocol. */
static __always_inline int parse_iphdr(struct hdr_cursor *c, void *data_end, struct iphdr **ip)
{
	struct iphdr *h = c->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	if (h->version != 4)
		return -1;
	__u32 ihl = h->ihl * 4;
	if (ihl < sizeof(*h))
		return -1;
	if (c->pos + ihl > data_end)
		return -1;
	c->pos += ihl;
	*ip = h;
	return h->protocol;
}

/* The IPv6 fixed header (version 6). Returns its next header: extension headers are not
 * parsed. (Shaped like parse_iphdr on purpose: each helper checks the bounds of the header it
 * reads, where it reads it, which is what the verifier follows.) */
static __always_inline int parse_ip6hdr(struct hdr_cursor *c, void *data_end, struct ipv6hdr **ip6)
{
	struct ipv6hdr *h = c->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	if (h->version != 6)
		return -1;
	c->pos = h + 1;
	*ip6 = h;
	return h->nexthdr;
}

/* The UDP header. Returns its length field (header included, host order) as written: whether
 * the datagram fits that length is the caller's to judge. */
static __always_inline int parse_udphdr(struct hdr_cursor *c, void *data_end, struct udphdr **udp)
{
	struct udphdr *h = c->pos;

	if ((void *)(h + 1) > data_end)
		return -1;
	c->pos = h + 1;
	*udp = h;
	return bpf_ntohs(h->len);
}

#endif
