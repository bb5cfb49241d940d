/* The receive metadata the steering program writes just before every frame it redirects to an
 * AF_XDP socket (the XDP metadata area; user space finds it at frame address - sizeof).
 * Mirrored in src/meta.rs: change both together. */
#ifndef STRATUM_META_H
#define STRATUM_META_H

#define STRATUM_META_MAGIC 0x5354524dU /* "STRM": tells user space the area was written */
#define STRATUM_META_HW 0x1U           /* rx_time_ns is the NIC's stamp (XDP metadata kfunc) */
#define STRATUM_META_TAI 0x2U          /* rx_time_ns is bpf_ktime_get_tai_ns() at XDP entry */

struct stratum_meta {
	__u64 rx_time_ns; /* receive time, nanoseconds of CLOCK_TAI (or the NIC's clock) */
	__u32 flags;      /* exactly one of STRATUM_META_HW, STRATUM_META_TAI */
	__u32 magic;      /* STRATUM_META_MAGIC */
};

#endif
