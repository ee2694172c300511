/* control.h - the daemon's side of the control socket (ctlproto.h).
 *
 * Actions on the cache (evict, verify) arrive on CACHE_DIR/ctl.sock and are
 * served by threads of this module, never by FUSE workers.  Only root and
 * the mount's owner may act: the socket lives in the 0700 cache_dir, and
 * every connection's SO_PEERCRED is checked again; anyone else gets a `done`
 * with error=EPERM.  Queries (stats, status) stay getxattr on the mount.
 */
#ifndef EFS_CONTROL_H
#define EFS_CONTROL_H

#include <stdbool.h>
#include <sys/types.h>

#include "cache.h"

struct control;

/* Listen on the control socket of c's cache_dir and serve requests from
 * root and owner.  Call after daemonizing.  0 or -errno. */
int control_start(struct control **out, struct cache *c, uid_t owner);
/* Stop serving: cut clients off (a verify stops after its current chunk),
 * join every thread, remove the socket.  NULL is fine. */
void control_stop(struct control *ctl);

/* May a peer with this uid act on the cache of a daemon owned by owner? */
bool control_allowed(uid_t peer, uid_t owner);

#endif
