/* The switch between pre-provisioned MCIMs and its undo (docs/model.md section 9;
 * docs/state-machines.md section 5), checked by spin (`make model`, tests/model/run.sh).
 *
 * Parties: the device (its TRE's order of notices, src/tre/tre_sign.c notify_check; the agent's
 * switch and undo, src/device/preprovisioned.c), the RO's relay and outbox (src/roles/ro/relay.c,
 * src/roles/outbox.c: a device's switch notices of one txn are one chain), the current SHO X and
 * the target SHO Y (each applies a notice only above the highest `seq` it applied,
 * src/roles/sho/change.c notice_in_order).
 *
 * Faults, at most MAXF in a run: the RO does not answer a request of the device (it took it or
 * not: both), the TRE fails to activate the target's MCIM, a delivery of the outbox fails (the
 * peer down: retried), X does not answer the switch's suspend (sent straight) until the
 * procedure's deadline, having applied it or not (both).
 *
 * Properties:
 *   p0  assertions and end states: when the device is done and the outbox empty, the network
 *       is as the TRE: the target active and X in standby after an activation, else X active
 *       and the target in standby; and nothing waits for ever;
 *   p1  never both subscriptions active (DESIGN.md section 4, invariant 1).
 *
 * Mutants (each must violate its property):
 *   MUT_NO_CHAIN     the outbox sends a device's notices in any order;
 *   MUT_OLD_UNDO     the undo as it was: each relay tried once, then X's resume straight
 *                    (with the outbox in any order, as it was);
 *   MUT_NO_RETRY     the undo not sent again when the RO does not answer;
 *   MUT_UNDO_NEEDS_ANSWER  no undo unless X answered the suspend (the agent before
 *                    `suspend_sent`: a suspend X applied but whose answer was lost left both
 *                    subscriptions in standby). */

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

byte st[2];             /* the SHOs' AuC states: X starts active, Y in standby */
byte applied[2];        /* the highest seq each SHO applied */
byte faults = 0;
bool device_done = false, activated = false;

typedef msg {
  byte to, ev, seq;
  byte after;           /* 0, or 1 + the index of the message it waits for (its chain) */
  bool done;
};
msg ob[NMSG];
byte nob = 0;

/* The SHO's notification handler: only upward in the TRE's order; an older notice is
 * NOTICE_OVERTAKEN and changes nothing (a delivery all the same). */
inline apply(t_, e_, q_) {
  if
  :: q_ > applied[t_] -> applied[t_] = q_; st[t_] = (e_ == RESUME -> ACTIVE : STANDBY)
  :: else -> skip
  fi
}

/* The relay takes a notice (POST ro /v1/dpf/notices): queued in the chain, after the chain's
 * last message while that one is not delivered (chain_last). */
inline ro_queue(t_, e_, q_) {
  assert(nob < NMSG);
  ob[nob].to = t_;
  ob[nob].ev = e_;
  ob[nob].seq = q_;
  ob[nob].after = (nob > 0 && !ob[nob - 1].done -> nob : 0);
  nob++
}

#ifdef MUT_NO_CHAIN
#define READY(k) (nob > k && !ob[k].done)
#elif defined(MUT_OLD_UNDO)
#define READY(k) (nob > k && !ob[k].done)
#else
#define READY(k) (nob > k && !ob[k].done && (ob[k].after == 0 || ob[ob[k].after - 1].done))
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

/* The device: the switch (X's suspend straight, Y's resume through the RO, the TRE's
 * activate), and when it stops after the suspend, the undo: Y's suspend, then X's resume, both
 * through the RO. The TRE numbers each notice it signs (seq), and signs X's resume only after
 * Y's suspend. */
active proctype device() {
  byte seq = 0, s_y_suspend, s_x_resume;
  st[X] = ACTIVE;
  st[Y] = STANDBY;
  seq++;
  if
  :: atomic { apply(X, SUSPEND, seq) }     /* suspend: straight, answered */
  :: faults < MAXF -> faults++;            /* no answer until the deadline: applied or not */
     if
     :: atomic { apply(X, SUSPEND, seq) }
     :: skip
     fi;
#ifdef MUT_UNDO_NEEDS_ANSWER
     goto done
#else
     goto undo
#endif
  fi;
  seq++;
  if
  :: atomic { ro_queue(Y, RESUME, seq) } ->
     if
     :: goto activate
     :: faults < MAXF -> faults++; goto undo /* taken, its answer lost: the deadline */
     fi
  :: faults < MAXF -> faults++; goto undo    /* the RO does not answer until the deadline */
  fi;
activate:
  if
  :: activated = true; goto done
  :: faults < MAXF -> faults++; goto undo    /* the TRE fails to activate */
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

/* p0: once the device is done and the outbox has delivered everything, the network is as the
 * TRE. A run that cannot get there blocks here: an invalid end state. */
active proctype settled() {
  (device_done && (nob < 1 || ob[0].done) && (nob < 2 || ob[1].done) &&
   (nob < 3 || ob[2].done) && (nob < 4 || ob[3].done)) ->
  assert(activated && st[Y] == ACTIVE && st[X] == STANDBY ||
         !activated && st[X] == ACTIVE && st[Y] == STANDBY)
}

ltl p1 { [] !(st[X] == ACTIVE && st[Y] == ACTIVE) }
