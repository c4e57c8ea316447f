/* The switch between pre-provisioned MCIMs and its undo (docs/model.md section 9;
 * docs/state-machines.md section 5), checked by spin (`make model`, tests/model/run.sh).
 *
 * Parties: the device (its TRE's order of notices, src/tre/tre_sign.c notify_check; the agent's
 * switch and undo, src/device/preprovisioned.c), the RO's relay and outbox (src/roles/ro/relay.c,
 * src/roles/outbox.c: a device's switch notices of one txn are one chain; the current SHO's
 * suspend, relayed once it did not take it from the device, is outside it), the current SHO X
 * and the target SHO Y (each applies a notice only above the highest `seq` it applied,
 * src/roles/sho/change.c notice_in_order). X is honest, hostile (it refuses every notice: it
 * answers, applies nothing) or dead (it stops answering during the switch, having applied the
 * suspend sent straight or not, and never comes back): chosen at the start.
 *
 * Faults, at most MAXF in a run: the RO does not answer a request of the device (it took it or
 * not: both), the TRE fails to activate the target's MCIM, a delivery of the outbox fails (the
 * peer down: retried), an honest X does not answer the switch's suspend (sent straight) until
 * the device's `ack_deadline`, having applied it or not (both).
 *
 * Properties:
 *   p0  assertions and end states: when the device is done and the outbox delivered
 *       everything it can (all but what waits for a dead X), the network is as the TRE: the
 *       target active and an honest X in standby after an activation, else the target in
 *       standby and an honest X active; nothing waits for ever; no veto: the switch
 *       activates unless the RO or the TRE failed (a fault of theirs); and X is told of an
 *       activation (straight, or its suspend in the RO's outbox);
 *   p1  never both subscriptions active, but while X's TRE-signed suspend waits in the RO's
 *       outbox (X did not take it from the device) or X is not honest (its own record:
 *       DESIGN.md section 4, invariant 1, as the change via the old SHO's receipt has it).
 *
 * Mutants (each must violate its property):
 *   MUT_NO_CHAIN     the outbox sends a device's notices in any order;
 *   MUT_OLD_UNDO     the undo as it was: each relay tried once, then X's resume straight
 *                    (with the outbox in any order, as it was);
 *   MUT_NO_RETRY     the undo not sent again when the RO does not answer;
 *   MUT_UNDO_NEEDS_ANSWER  no undo unless X answered the suspend (the agent before
 *                    `suspend_sent`: a suspend X applied but whose answer was lost left both
 *                    subscriptions in standby);
 *   MUT_NO_RELAY     X's suspend never relayed: its deadline undoes the switch (the code
 *                    before 2026-12-08: X vetoed the switch by not taking it);
 *   MUT_X_CHAINED    X's relayed suspend in the device's chain: the target's resume waits
 *                    behind it, for ever when X is dead;
 *   MUT_RELAY_LIVE_ONLY  the relay takes X's suspend only while X's DRF entry is live (the
 *                    first fix, before a review of 2026-12-08): a hostile X releases its own
 *                    entry and the relay refuses, until the switch's deadline. */

#ifndef MAXF
#define MAXF 4
#endif

#define X 0
#define Y 1
#define STANDBY 0
#define ACTIVE 1
#define SUSPEND 0
#define RESUME 1
#define NMSG 4
#define HONEST 0
#define HOSTILE 1
#define DEAD 2

byte st[2];             /* the SHOs' AuC states: X starts active, Y in standby */
byte applied[2];        /* the highest seq each SHO applied */
byte faults = 0;
byte rofaults = 0;      /* the faults of the RO's relay and of the TRE (they may undo a switch) */
byte xkind = HONEST;
bool device_done = false, activated = false;
bool x_told = false;    /* X took its suspend straight, or the RO took it to relay */
bool x_released = false; /* a hostile X released its own DRF entry (registry.c lets it) */

typedef msg {
  byte to, ev, seq;
  byte after;           /* 0, or 1 + the index of the message it waits for (its chain) */
  bool done;
};
msg ob[NMSG];
byte nob = 0;
byte chain_last = 0;    /* 1 + the index of the chain's last message, 0: none */
byte xsus = 0;            /* 1 + the index of X's relayed suspend, 0: none */

/* X's suspend relayed by the RO and not delivered: its own record may still say active */
#define X_PENDING (xsus > 0 && !ob[xsus - 1].done)

/* The SHO's notification handler: only upward in the TRE's order; an older notice is
 * NOTICE_OVERTAKEN and changes nothing (a delivery all the same). A hostile X answers every
 * notice and applies none (its 409, which the outbox takes as final). */
inline apply(t_, e_, q_) {
  if
  :: t_ == X && xkind == HOSTILE -> skip
  :: else ->
     if
     :: q_ > applied[t_] -> applied[t_] = q_; st[t_] = (e_ == RESUME -> ACTIVE : STANDBY)
     :: else -> skip
     fi
  fi
}

/* The relay takes a notice (POST ro /v1/dpf/notices): queued in the chain, after the chain's
 * last message while that one is not delivered (chain_last). */
inline ro_queue(t_, e_, q_) {
  assert(nob < NMSG);
  ob[nob].to = t_;
  ob[nob].ev = e_;
  ob[nob].seq = q_;
  ob[nob].after = (chain_last > 0 && !ob[chain_last - 1].done -> chain_last : 0);
  chain_last = nob + 1;
  nob++
}

/* X's suspend, relayed outside the chain (relay.c, leg "from"): nothing waits for it, and it
 * waits for nothing. */
inline ro_queue_free(t_, e_, q_) {
  assert(nob < NMSG);
  ob[nob].to = t_;
  ob[nob].ev = e_;
  ob[nob].seq = q_;
  ob[nob].after = 0;
  xsus = nob + 1;
  nob++
}

/* the relay takes X's suspend: linked by an entry in any state (relay.c) */
#ifdef MUT_RELAY_LIVE_ONLY
#define RELAY_TAKES (!x_released)
#else
#define RELAY_TAKES 1
#endif

/* a message a dead X never takes is never ready */
#define ALIVE(k) (ob[k].to != X || xkind != DEAD)
#ifdef MUT_NO_CHAIN
#define READY(k) (nob > k && !ob[k].done && ALIVE(k))
#elif defined(MUT_OLD_UNDO)
#define READY(k) (nob > k && !ob[k].done && ALIVE(k))
#else
#define READY(k) (nob > k && !ob[k].done && ALIVE(k) && \
                  (ob[k].after == 0 || ob[ob[k].after - 1].done))
#endif

/* The RO's outbox: any message ready, in any order; a delivery may fail (retried). */
active proctype outbox() {
  byte i;
end:
  do
  :: atomic {
       if
       :: READY(0) -> i = 0
       :: READY(1) -> i = 1
       :: READY(2) -> i = 2
       :: READY(3) -> i = 3
       fi;
       if
       :: faults < MAXF -> faults++ /* the peer down: retried later */
       :: apply(ob[i].to, ob[i].ev, ob[i].seq); ob[i].done = true
       fi;
       i = 0
     }
  od
}

/* The device: the switch (X's suspend straight, or through the RO once X did not take it by
 * the deadline; Y's resume through the RO; the TRE's activate), and when it stops after the
 * suspend, the undo: Y's suspend, then X's resume, both through the RO. The TRE numbers each
 * notice it signs (seq; a notice signed again keeps its number), and signs X's resume only
 * after Y's suspend. */
active proctype device() {
  byte seq = 0, s_y_suspend, s_x_resume;
  st[X] = ACTIVE;
  st[Y] = STANDBY;
  if
  :: xkind = HONEST
  :: xkind = HOSTILE
  :: xkind = DEAD
  fi;
  seq++;
  if
  :: xkind == HONEST -> atomic { apply(X, SUSPEND, seq); x_told = true }; goto resume_y
  :: xkind == HONEST && faults < MAXF -> faults++;   /* no answer by the deadline */
     if
     :: atomic { apply(X, SUSPEND, seq) }
     :: skip
     fi
  :: xkind == HOSTILE ->                             /* refused; its DRF entry released? */
     if
     :: x_released = true
     :: skip
     fi
  :: xkind == DEAD ->                                /* gone, having applied it or not */
     if
     :: atomic { apply(X, SUSPEND, seq) }
     :: skip
     fi
  fi;
#ifdef MUT_NO_RELAY
  goto undo
#else
  if
#ifdef MUT_RELAY_LIVE_ONLY
  :: x_released -> goto undo                         /* refused: SHO_NOT_LINKED */
#endif
#ifdef MUT_X_CHAINED
  :: atomic { RELAY_TAKES -> ro_queue(X, SUSPEND, seq); x_told = true } ->
#else
  :: atomic { RELAY_TAKES -> ro_queue_free(X, SUSPEND, seq); x_told = true } ->
#endif
     if
     :: skip
     :: faults < MAXF -> faults++; rofaults++; goto undo /* taken, its answer lost */
     fi
  :: faults < MAXF -> faults++; rofaults++;          /* the RO does not answer until the end */
#ifdef MUT_UNDO_NEEDS_ANSWER
     goto done
#else
     goto undo
#endif
  fi;
#endif
resume_y:
  seq++;
  if
  :: atomic { ro_queue(Y, RESUME, seq) } ->
     if
     :: goto activate
     :: faults < MAXF -> faults++; rofaults++; goto undo /* taken, its answer lost: the deadline */
     fi
  :: faults < MAXF -> faults++; rofaults++; goto undo    /* the RO does not answer: the deadline */
  fi;
activate:
  if
  :: activated = true; goto done
  :: faults < MAXF -> faults++; rofaults++; goto undo    /* the TRE fails to activate */
  fi;
undo:
  seq++;
  s_y_suspend = seq;
  seq++;
  s_x_resume = seq;
#ifdef MUT_OLD_UNDO
  if
  :: atomic { ro_queue(Y, SUSPEND, s_y_suspend) }
  :: faults < MAXF -> faults++
  fi;
  if
  :: atomic { ro_queue(X, RESUME, s_x_resume) }
  :: faults < MAXF -> faults++
  fi;
  atomic { apply(X, RESUME, s_x_resume) }  /* straight to X, with its standby token */
#else
suspend_y:
  if
  :: atomic { ro_queue(Y, SUSPEND, s_y_suspend) }
  :: faults < MAXF -> faults++;            /* no answer: the undo is due again (undo_due) */
#ifdef MUT_NO_RETRY
     goto done
#else
     goto suspend_y
#endif
  fi;
resume_x:
  if
  :: atomic { ro_queue(X, RESUME, s_x_resume) }
  :: faults < MAXF -> faults++;
#ifdef MUT_NO_RETRY
     goto done
#else
     goto resume_x                         /* asked again: the suspend's stored answer first */
#endif
  fi;
#endif
done:
  device_done = true
}

/* p0: once the device is done and the outbox has delivered everything it can, the network is
 * as the TRE, and the switch was not vetoed. A run that cannot get there blocks here: an
 * invalid end state. */
#define SETTLED(k) (nob <= k || ob[k].done || !ALIVE(k))
active proctype settled() {
  (device_done && SETTLED(0) && SETTLED(1) && SETTLED(2) && SETTLED(3)) ->
  assert(activated || rofaults > 0);
  assert(!activated || x_told);
  assert(activated && st[Y] == ACTIVE && (xkind != HONEST || st[X] == STANDBY) ||
         !activated && st[Y] == STANDBY && (xkind != HONEST || st[X] == ACTIVE))
}

ltl p1 { [] ((st[X] == ACTIVE && st[Y] == ACTIVE) -> (X_PENDING || xkind != HONEST)) }
