/* The wakes of long polls between the instances of a role on one PostgreSQL database (issue
 * 10, point 5; docs/operations.md, "Several instances").
 *
 * A held request ("not yet": a package, a validation, an active subscription) is dispatched
 * again when the commit that makes it true wakes its key (mcim_http_wake, src/net/http_wait.c).
 * With two instances behind a balancer that commit is often the other instance's. Without this
 * file the held request learns of it only at its next recheck (long_poll_recheck_ms, 250 ms):
 * late, and a whole dispatch every recheck. Here every wake of this process is also sent as a
 * NOTIFY on the channel "mcim_wake" of the role's database, after the commit that made it (the
 * handler wakes after committing), and every NOTIFY of another instance wakes this process's
 * held requests on that key. The payload is "INSTANCE KEY": an instance ignores its own.
 *
 * While the channel listens, held requests are not rechecked (mcim_http_wake_live); when it
 * listens again after a loss (the server forgets a LISTEN with its session: what was notified
 * meanwhile is lost to it), every held request is dispatched once, and while it is down the
 * rechecks are back. SQLite has one instance per file: nothing to relay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcim/http.h"
#include "mcim/log.h"
#include "mcim/util.h"
#include "roles/role_priv.h"
#include "store/pg_channel.h"

#define CHANNEL "mcim_wake"
#define INSTANCE_HEX 16

struct wake_relay {
  mcim_pg_channel_t *ch;
  char instance[INSTANCE_HEX + 1]; /* random, this process's: its own NOTIFYs come back */
};

static void relay_send(const char *key, void *arg)
{
  struct wake_relay *w = arg;
  char payload[INSTANCE_HEX + 1 + MCIM_HTTP_WAIT_KEY_LEN];
  snprintf(payload, sizeof(payload), "%s %s", w->instance, key);
  (void)mcim_pg_channel_send(w->ch, payload); /* not queued: logged there; rechecks are off
                                               * only while the channel is live */
}

static void on_message(const char *payload, void *arg)
{
  struct wake_relay *w = arg;
  const char *sp = strchr(payload, ' ');
  if (!sp || (size_t)(sp - payload) != INSTANCE_HEX)
    return; /* not ours: any client of the database may NOTIFY */
  if (memcmp(payload, w->instance, INSTANCE_HEX) == 0)
    return;
  mcim_http_wake_local(sp + 1);
}

static void on_live(bool live, void *arg)
{
  (void)arg;
  mcim_http_wake_live(live);
  if (live)
    mcim_log_info("long polls: listening for the other instances' wakes (NOTIFY %s)", CHANNEL);
}

mcim_cause_t mcim_role_wake_relay_start(struct mcim_role *r)
{
  if (strncmp(r->priv->db_locator, "postgres", 8) != 0)
    return MCIM_OK;
  struct wake_relay *w = calloc(1, sizeof(*w));
  if (!w)
    return MCIM_NO_MEMORY;
  uint8_t id[INSTANCE_HEX / 2];
  mcim_cause_t rc = mcim_random_id(id, sizeof(id));
  if (rc != MCIM_OK) {
    free(w);
    return rc;
  }
  mcim_hex_encode(id, sizeof(id), w->instance);
  const struct mcim_pg_channel_cbs cbs = {.on_message = on_message, .on_live = on_live, .arg = w};
  rc = mcim_pg_channel_open(r->priv->db_locator, CHANNEL, &cbs, &w->ch);
  if (rc != MCIM_OK) {
    free(w);
    return rc;
  }
  mcim_http_wake_relay(relay_send, w);
  r->priv->wake_relay = w;
  return MCIM_OK;
}

void mcim_role_wake_relay_stop(struct mcim_role *r)
{
  struct wake_relay *w = r->priv ? r->priv->wake_relay : NULL;
  if (!w)
    return;
  mcim_http_wake_relay(NULL, NULL); /* no new sends; rechecks back for what is still held */
  mcim_pg_channel_close(w->ch);
  free(w);
  r->priv->wake_relay = NULL;
}
