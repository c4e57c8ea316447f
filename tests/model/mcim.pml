/* mcim.pml -- a Promela model of mcim's procedures (issue 12 point 2; docs/model.md).
 *
 * One device (agent + TRE), the RO (ICF, DRF, DPF), the PVA, the VNO (as "the PCID works")
 * and two SHOs, A (the device's current SHO) and B (the new one), for ONE procedure per run:
 *   PROC 1  initial provisioning with B (pristine steps 4-15)
 *   PROC 2  change of SHO A -> B via the old SHO (steps 1-14)
 *   PROC 3  change of SHO A -> B via the pristine state (steps 1-15)
 * Step 1 (the owner's order at B, checked by the DRF) has happened when the model starts.
 *
 * Faults, from one budget of MAXF: a request lost before its receiver acts, an answer lost
 * after it acted (the sender retries: a duplicate), an outbox delivery lost or duplicated,
 * a crash of the agent between a durable effect and the agent's save of it. A role's crash
 * is one of these (each handler is one store transaction: before its commit it is a lost
 * request, after it a lost answer; its outbox is durable and redelivered). HOSTILE names a
 * hostile SHO (1 = A, 2 = B) that makes up to HMOVES moves: any request its certificate or a
 * token it mints lets it send, on every route of every role, with any txn and statement it
 * holds (proctype Hostile, each handler with the code's checks); A hostile may also stop
 * answering for good (dead) or answer the receipt with anything.
 *
 * Properties (ltl below, one per spin run, -N NAME):
 *   p1  at most one live subscription per device network-side
 *   p2  the device always keeps a working credential (an MCIM or its PCID)
 *   p3  no SHO learns another SHO's credential, name or IMSI
 *   p4  the old SHO never terminates on a forged receipt
 *   p5  every procedure ends, and the network quiesces (weak fairness, -a -f)
 *   p6  no veto: with B honest, the procedure ends in success unless it failed before the
 *       device gave anything up (weak fairness, -a -f)
 *   p7  the old SHO hears the end: once the device destroyed A's MCIM, an honest A ends its
 *       subscription (weak fairness, -a -f)
 * Mutants (MUT_*), among them the code as it was before each finding was fixed: docs/model.md. */

#ifndef PROC
#define PROC 2
#endif
#ifndef HOSTILE
#define HOSTILE 0
#endif
#ifndef MAXF
#define MAXF 2
#endif
#ifndef HMOVES
#define HMOVES 2
#endif
#ifndef ACK_TRIES
#define ACK_TRIES 2
#endif
#ifndef TOKEN_EXPIRY
#define TOKEN_EXPIRY 0 /* 1: the old SHO's access token (live or saved) may expire during the run */
#endif
#ifndef PCID_EXPIRY
#define PCID_EXPIRY 0 /* 1: the PCID may be expired at the start, and its renewal may fail */
#endif
#ifndef LATE_REG_A
#define LATE_REG_A 0 /* 1: A's registration of its install (`subscribed`, step 15) is still in
                      * A's outbox when the change starts (an SHO instance killed with it in
                      * its outbox, sent by another instance after the lease; stop 33's CI) */
#endif

#define P_INITIAL 1
#define P_OLD 2
#define P_PRISTINE 3

#define A 1
#define B 2
#define V 3 /* the VNO, as an access network */

/* SHO AuC entry (src/roles/auc.c) */
#define AUC_NONE 0
#define AUC_PENDING 1
#define AUC_ACTIVE 2
#define AUC_TERM 3
/* TRE slot (src/tre/tre_slots.c) */
#define SL_NONE 0
#define SL_INACTIVE 1
#define SL_ACTIVE 2
/* PCID (src/tre/tre_pcid.c, src/device/pcid.c) */
#define PC_OK 0
#define PC_NEAR 1 /* within pcid_renew_margin: works for the whole procedure */
#define PC_EXPIRED 2
/* SHO B's order (src/roles/sho/order.c) */
#define O_ORDERED 1
#define O_VALIDATING 2
#define O_PROV 3
#define O_INST 4
#define O_ACTIVE 5
/* DRF entry per (device, SHO) */
#define R_NONE 0
#define R_SUBSCRIBED 1
#define R_RELEASED 2
#define R_PRELOADED 3
/* the txn values a hostile SHO can put in a request: the old SHO's own earlier install (the
 * one its DRF entry came from), this procedure's (known to B from its order, to A from step
 * 9 on), and any other (matches no record of this device) */
#define T_OLD 0
#define T_CUR 1
#define T_OTHER 2
/* what each SHO knows (bits) */
#define K_A_NAME 1
#define K_A_IMSI 2
#define K_A_CRED 4
#define K_B_NAME 8
#define K_B_IMSI 16
#define K_B_CRED 32
#define K_A_ALL 7
#define K_B_ALL 56
/* the device's procedure */
#define RUNNING 0
#define SUCCEEDED 1
#define FAILED 2

/* device stages (src/device/change.c, initial.c tables) */
#define S_ATTACH_OLD 1
#define S_PCID 2
#define S_PRISTINE 3
#define S_ATTACH_VNO 4
#define S_DISCOVER 5
#define S_NONCE 6
#define S_QUOTE 7
#define S_DOWNLOAD 8
#define S_DISCARD 9
#define S_RECEIPT 10
#define S_RELEASE 11
#define S_INSTALL 12
#define S_REPORT 13
#define S_ATTACH_SHO 14
#define S_NOTIFY 15
#define S_END 16

byte faults = MAXF;
byte hmoves = HMOVES;
bool a_dead;          /* A stopped answering for good (HOSTILE == 1 only) */

/* ---- TRE (durable: tre.sealed, one atomic write per op) ---- */
byte tre_slot[3];
bool tre_staged;      /* B's package staged whole and verified */
bool tre_pend[3];     /* a TRE-signed discard receipt/notice queued for that SHO */
byte pcid = PC_OK;
bool pcid_new;        /* renewed: a fresh PCID at the ICF (the previous one kept) */

/* ---- agent (durable: agent.db, the procedure's data, saved after each stage) ---- */
byte stage;
byte dres = RUNNING;
byte d_acc;           /* the access network of the procedure's calls */
bool d_saved;         /* the old SHO's session saved (st_discard, before step 8) */
bool d_ack;           /* the old SHO's acknowledgement (step 10) */
bool d_by_receipt;    /* past ack_deadline: the receipt stands in (step 11) */
bool d_gave_up;       /* the device destroyed or removed an MCIM in this procedure */
byte d_tries;         /* failed rounds of the receipt stage (stands for ack_deadline) */
/* ---- agent (volatile: lost by a crash) ---- */
bool sesA, sesV;
bool tok_exp;         /* the old SHO's token (in memory and saved) has expired (TOKEN_EXPIRY) */

/* ---- SHOs ---- */
byte auc[3];
byte ordB = O_ORDERED;
bool relB;            /* B's order: released (step 11 relayed) */
bool ackA;            /* A's stored answer of step 10 */
byte know[3];
bool a_knows_txn;     /* the txn was told to A (step 9, or a relayed notice) */

/* ---- RO (DRF, DPF, ICF) and PVA ---- */
byte pva;             /* 0 none, 1 validation (nonce) pending, 2 verdict */
byte dpf_pkg;         /* 0 none, 1 ready, 2 installed (status recorded) */
bool dpf_rel;         /* step 11's release recorded */
byte drf_reg[3];
bool drf_relcur;      /* A's entry is `released` for this procedure's txn (another txn: 0); kept
                       * only where a check reads it (MUT_RELEASED_THIS_TXN), 0 elsewhere */
bool drf_pinA;        /* A's entry carries a `seq` above anything A's outbox sends (newer wins) */
bool ro_noticeA;      /* the RO accepted a receipt/notice to A (its stored answer, relay.c) */
#ifdef MUT_RELEASED_THIS_TXN
#define SET_RELCUR(v) drf_relcur = (v)
#define SAME_RELCUR(v) (drf_relcur == (v))
#else
#define SET_RELCUR(v) skip
#define SAME_RELCUR(v) 1
#endif
bool drf_ready;       /* step 8's notification queued (discovery) */

/* ---- outboxes (durable; retried until delivered) ---- */
bool ob_validate;     /* B   -> PVA  POST /v1/validations (step 3 / 9) */
bool ob_verdict;      /* PVA -> B    POST /v1/verdicts (5 / 11) */
bool ob_pkg;          /* B   -> RO   POST /v1/dpf/packages (6) | /v1/drf/authorisations (12) */
bool ob_ready;        /* RO  -> B    POST /v1/devices/ready (8) */
bool ob_report;       /* RO  -> B    POST /v1/reports (13 / 15) */
bool ob_release;      /* RO  -> B    POST /v1/releases (11) */
bool ob_regB;         /* B   -> RO   POST /v1/drf/registrations subscribed (14) */
bool ob_regA;         /* A   -> RO   POST /v1/drf/registrations released */
bool ob_subA;         /* A   -> RO   POST /v1/drf/registrations subscribed (LATE_REG_A) */
bool ob_relayA;       /* RO  -> A    POST /v1/discards (relayed receipt or notice, step 0) */

/* ---- ghosts ---- */
bool forged_term;     /* A terminated on a receipt the TRE did not sign */

#define LIVE(x) (auc[x] == AUC_ACTIVE && tre_slot[x] != SL_NONE)
#define PCID_WORKS (pcid != PC_EXPIRED || pcid_new)
#define MCIM_WORKS(x) (tre_slot[x] == SL_ACTIVE && auc[x] == AUC_ACTIVE)
#define A_REACHABLE (!a_dead)
#define QUIET (!ob_validate && !ob_verdict && !ob_pkg && !ob_ready && !ob_report && \
               !ob_release && !ob_regB && !(ob_regA && A_REACHABLE) && \
               !(ob_subA && A_REACHABLE) && \
               !(ob_relayA && A_REACHABLE))

ltl p1 { [] !(LIVE(A) && LIVE(B)) }
ltl p2 { [] (PCID_WORKS || MCIM_WORKS(A) || MCIM_WORKS(B)) }
ltl p3 { [] ((know[A] & K_B_ALL) == 0 && (know[B] & K_A_ALL) == 0) }
ltl p4 { [] !forged_term }
ltl p5 { <> (dres != RUNNING && QUIET) }
ltl p6 { <> (dres == SUCCEEDED || (dres == FAILED && !d_gave_up)) }
/* A hostile A keeps its AuC as it likes; an initial provisioning has no A. A's MCIM still in
 * the TRE: nothing to end (the procedure stopped before step 8 / step 3). */
#define A_ENDS (PROC == P_INITIAL || HOSTILE == 1 || tre_slot[A] != SL_NONE || auc[A] == AUC_TERM)
ltl p7 { <> [] (dres != RUNNING && A_ENDS) }

/* one unit of the fault budget, or not */
inline fault(ok) {
  if
  :: faults > 0 -> faults--; ok = 0
  :: true -> ok = 1
  fi
}

/* ---- the roles' handlers (each one store transaction) ---- */

/* SHO B: activation (mcim_sho_activate): AuC pending -> active, DRF registration queued */
inline b_activate() {
  auc[B] = AUC_ACTIVE; ordB = O_ACTIVE; ob_regB = 1
}

/* SHO B: POST /v1/reports (mcim_sho_on_report): a change via the old SHO waits for the
 * release (step 11) too */
inline b_on_report() {
  if
  :: ordB == O_PROV ->
     if
#ifndef MUT_REPORT_ALONE
     :: PROC == P_OLD && !relB -> ordB = O_INST
#endif
     :: else -> b_activate()
     fi
  :: else -> skip
  fi
}

/* SHO B: POST /v1/releases (mcim_sho_release) */
inline b_on_release() {
  if
  :: !relB -> relB = 1; if :: ordB == O_INST -> b_activate() :: else -> skip fi
  :: else -> skip
  fi
}

/* SHO B: POST /v1/verdicts (positive): the MCIM made, AuC pending, sealed to the TRE, queued
 * to the DPF (change via the old SHO) or to the DRF's authorisation */
inline b_on_verdict() {
  if
  :: ordB == O_VALIDATING -> auc[B] = AUC_PENDING; ordB = O_PROV; ob_pkg = 1
  :: else -> skip
  fi
}

/* SHO A: POST /v1/discards (mcim_sho_discard). genuine: signed by the TRE, aud A, slot A,
 * the IMSI A's; relayed: from the RO (mTLS). Termination: AuC terminated (its tokens
 * revoked), orders released, DRF `released` queued, the acknowledgement stored. */
inline a_on_discard(genuine, relayed, answered) {
  answered = 0;
  if
  :: a_dead -> skip
#ifdef MUT_A_NO_VERIFY
  :: !a_dead ->
#else
  :: !a_dead && !genuine -> skip /* CERT_INVALID / signature / caller refused */
  :: !a_dead && genuine ->
#endif
     a_knows_txn = 1;
     if
     :: ackA -> answered = 1 /* the stored answer, after the same checks */
     :: else ->
        forged_term = forged_term || !genuine;
        auc[A] = AUC_TERM; ob_regA = 1; ackA = 1; answered = 1
     fi
  fi
}

/* the DPF's record of A's install (drf_orders `installed`, from the device's TRE-signed
 * status): A's MCIM is in the TRE when a change starts, so always there in a change */
#define A_INSTALL_ON_RECORD (PROC != P_INITIAL)

/* RO DRF: POST /v1/drf/registrations */
inline ro_on_reg_b() { if :: dpf_pkg == 2 -> drf_reg[B] = R_SUBSCRIBED :: else -> skip fi }
/* A's `released` (txn this one, seq its clock): registration_proven needs an entry of A or,
 * since 2026-12-06, the DPF's record of an install of A's MCIM on the device; an entry with a
 * newer seq stands (answered `superseded`) */
inline ro_on_reg_a() {
  if
  :: (drf_reg[A] != R_NONE || A_INSTALL_ON_RECORD) && !drf_pinA ->
     drf_reg[A] = R_RELEASED; SET_RELCUR(1)
  :: else -> skip
  fi
}

/* A's late `subscribed` (registry.c registration_proven): proven by A's install on record,
 * unless overtaken by B's install since (REGISTRATION_OVERTAKEN, 409: nothing changes, and
 * A's outbox takes it as delivered); an entry already there is newer (its seq) and stands */
inline ro_on_sub_a() {
  if
  :: drf_reg[A] == R_NONE && dpf_pkg != 2 -> drf_reg[A] = R_SUBSCRIBED
  :: else -> skip
  fi
}

/* RO DPF: POST /v1/dpf/packages (6) or DRF authorisations (12): the order, the verdict */
inline ro_on_pkg() { if :: dpf_pkg == 0 && pva == 2 -> dpf_pkg = 1 :: else -> skip fi }

/* RO: mcim_ro_device_statement (relay.c): the statement is TRE-signed and aud `to`, and the
 * DRF links `to` to the device now (an entry not `released`: subscribed or preloaded); for
 * the discard receipt of step 11 also an entry `to` released (mcim_ro_released_receipt: the
 * old SHO's own word that it is done; finding F2, then F4: whatever txn its `released`
 * carries, since an SHO registers its own entry with any txn it likes), and since F5 the
 * DPF's record of A's install alone (an A that never registered: mcim_ro_sho_linked, which
 * release.c asks of an acknowledgement too; in the model that always holds for A's, and a
 * third SHO is not modelled). MUT_RELEASED_REFUSED: the code before F2's fix;
 * MUT_RELEASED_THIS_TXN: the code before F4's fix (only an entry released for this very
 * txn); MUT_LINK_NEEDS_ENTRY: the code before F5's fix (an entry in any state). */
#define A_ENTRY_LIVE (drf_reg[A] == R_SUBSCRIBED) /* or preloaded: read alike everywhere */
#if defined(MUT_RELEASED_REFUSED)
#define DRF_LINKS_A A_ENTRY_LIVE
#elif defined(MUT_RELEASED_THIS_TXN)
#define DRF_LINKS_A (A_ENTRY_LIVE || (drf_reg[A] == R_RELEASED && drf_relcur))
#elif defined(MUT_LINK_NEEDS_ENTRY)
#define DRF_LINKS_A (drf_reg[A] != R_NONE)
#else
#define DRF_LINKS_A (drf_reg[A] != R_NONE || A_INSTALL_ON_RECORD)
#endif
/* the relay of a discard notice (mcim_dpf_notice): an entry in any state (a switch notice,
 * not modelled here, needs a live one), an install of A's MCIM on record, or the stored
 * answer of the same notice accepted before (stored_notice_answer). Before 2026-12-06 a live
 * entry: an A that released its entry first held the notice back until the TRE's 30 days.
 * Before 2026-12-07 (the install): an A whose `subscribed` came after B's install was refused
 * as overtaken and never had an entry, and the notice waited for good, A active beside B
 * (integration/scale_out; finding F8, MUT_NOTICE_NEEDS_ENTRY, caught by p7 with LATE_REG_A). */
#ifdef MUT_NOTICE_NEEDS_ENTRY
#define NOTICE_LINKS_A (drf_reg[A] != R_NONE || ro_noticeA)
#else
#define NOTICE_LINKS_A (drf_reg[A] != R_NONE || A_INSTALL_ON_RECORD || ro_noticeA)
#endif
/* the RO refuses A's tokens minted before A's `released` if its seq is above their iat_us
 * (token_live_at_ro): with an entry `released`, a call of the device at the RO with A's token
 * may be refused (TOKEN_REVOKED, the procedure fails before step 8) or taken */
#define RO_REVOKED_A (drf_reg[A] == R_RELEASED)

/* ---- the network: every outbox's worker (at-least-once, deduplicated by the receiver) ---- */
active proctype Network()
{
  bool ok, ans;
end_net:
  do
  :: atomic { ob_validate -> fault(ok); if :: ok -> pva = (pva > 0 -> pva : 1); ordB = (ordB == O_ORDERED -> O_VALIDATING : ordB); ob_validate = 0 :: else -> skip fi }
  :: atomic { ob_verdict -> fault(ok); if :: ok -> b_on_verdict(); ob_verdict = 0 :: else -> skip fi }
  :: atomic { ob_pkg -> fault(ok); if :: ok -> ro_on_pkg(); ob_pkg = 0 :: else -> skip fi }
  :: atomic { ob_ready -> fault(ok); if :: ok -> ob_validate = (ordB == O_ORDERED -> 1 : ob_validate); ob_ready = 0 :: else -> skip fi }
  :: atomic { ob_report -> fault(ok); if :: ok -> b_on_report(); ob_report = 0 :: else -> skip fi }
  :: atomic { ob_release -> fault(ok); if :: ok -> b_on_release(); ob_release = 0 :: else -> skip fi }
  :: atomic { ob_regB -> fault(ok); if :: ok -> ro_on_reg_b(); ob_regB = 0 :: else -> skip fi }
  :: atomic { ob_regA && !a_dead -> fault(ok); if :: ok -> ro_on_reg_a(); ob_regA = 0 :: else -> skip fi }
  :: atomic { ob_subA && !a_dead -> fault(ok); if :: ok -> ro_on_sub_a(); ob_subA = 0 :: else -> skip fi }
  :: atomic { ob_relayA && !a_dead -> fault(ok);
       if :: ok -> a_on_discard(1, 1, ans); ob_relayA = 0 :: else -> skip fi }
  od
}

/* ---- the device: the agent's engine over the procedure's table, the TRE's ops ---- */

inline crash() { sesA = 0; sesV = 0 }

inline fail() { dres = FAILED; stage = S_END }

/* the access token of the procedure's calls (dev_run_access_token, dev_run_token_for):
 * r = 1 a session, 0 retry, 2 the procedure fails */
inline access(r) {
  r = 0;
  if
  :: d_acc == A && tok_exp -> /* the token expired: restore refuses it, A refuses it */
     sesA = 0;
     if
     :: !a_dead && MCIM_WORKS(A) -> fault(r); if :: r -> sesA = 1; tok_exp = 0 :: else -> skip fi
     :: a_dead -> r = 2
     :: !a_dead && !MCIM_WORKS(A) -> r = 2 /* NOT_FOUND: the TRE holds no MCIM of A */
     fi
  :: d_acc == A && !tok_exp ->
     if
     :: sesA -> r = 1
     :: !sesA && d_saved -> sesA = 1; r = 1 /* dev_session_restore: from agent.db */
     :: !sesA && !d_saved && a_dead -> r = 2 /* TIMEOUT past procedure_timeout */
     :: !sesA && !d_saved && !a_dead && MCIM_WORKS(A) -> fault(r); sesA = r
     :: !sesA && !d_saved && !a_dead && !MCIM_WORKS(A) -> r = 2
     fi
  :: d_acc == V ->
     if
     :: sesV -> r = 1
     :: !sesV && PCID_WORKS -> fault(r); sesV = r
     :: !sesV && !PCID_WORKS -> r = 2 /* CREDENTIAL_EXPIRED */
     fi
  fi
}

/* the old SHO's network carries the call: a dead A carries nothing (TIMEOUT) */
#define CARRIED (d_acc != A || !a_dead)

inline next_stage() {
  if
  :: PROC == P_OLD ->
     if
     :: stage == S_ATTACH_OLD -> stage = S_PCID
     :: stage == S_PCID -> stage = S_NONCE
     :: stage == S_NONCE -> stage = S_QUOTE
     :: stage == S_QUOTE -> stage = S_DOWNLOAD
#ifdef MUT_INSTALL_FIRST
     :: stage == S_DOWNLOAD -> stage = S_INSTALL
     :: stage == S_INSTALL -> stage = S_REPORT
     :: stage == S_REPORT -> stage = S_DISCARD
     :: stage == S_DISCARD -> stage = S_RECEIPT
     :: stage == S_RECEIPT -> stage = S_RELEASE
     :: stage == S_RELEASE -> stage = S_ATTACH_SHO
#else
     :: stage == S_DOWNLOAD -> stage = S_DISCARD
     :: stage == S_DISCARD -> stage = S_RECEIPT
     :: stage == S_RECEIPT -> stage = S_RELEASE
     :: stage == S_RELEASE -> stage = S_INSTALL
     :: stage == S_INSTALL -> stage = S_REPORT
     :: stage == S_REPORT -> stage = S_ATTACH_SHO
#endif
     :: stage == S_ATTACH_SHO -> stage = S_END; dres = SUCCEEDED
     fi
  :: PROC == P_PRISTINE ->
     if
#ifdef MUT_LATE_PRISTINE
     :: stage == S_PCID -> stage = S_ATTACH_VNO
     :: stage == S_REPORT -> stage = S_PRISTINE
     :: stage == S_PRISTINE -> stage = S_ATTACH_SHO
#else
     :: stage == S_PCID -> stage = S_PRISTINE
     :: stage == S_PRISTINE -> stage = S_ATTACH_VNO
     :: stage == S_REPORT -> stage = S_ATTACH_SHO
#endif
     :: stage == S_ATTACH_VNO -> stage = S_DISCOVER
     :: stage == S_DISCOVER -> stage = S_NONCE
     :: stage == S_NONCE -> stage = S_QUOTE
     :: stage == S_QUOTE -> stage = S_DOWNLOAD
     :: stage == S_DOWNLOAD -> stage = S_INSTALL
     :: stage == S_INSTALL -> stage = S_REPORT
     :: stage == S_ATTACH_SHO -> stage = S_NOTIFY
     :: stage == S_NOTIFY -> stage = S_END; dres = SUCCEEDED
     fi
  :: PROC == P_INITIAL ->
     if
     :: stage == S_ATTACH_VNO -> stage = S_DISCOVER
     :: stage == S_DISCOVER -> stage = S_NONCE
     :: stage == S_NONCE -> stage = S_QUOTE
     :: stage == S_QUOTE -> stage = S_DOWNLOAD
     :: stage == S_DOWNLOAD -> stage = S_INSTALL
     :: stage == S_INSTALL -> stage = S_REPORT
     :: stage == S_REPORT -> stage = S_ATTACH_SHO
     :: stage == S_ATTACH_SHO -> stage = S_END; dres = SUCCEEDED
     fi
  fi
}

active proctype Device()
{
  byte r;
  bool ok, ans;

  do
  :: stage == S_END -> break

#if TOKEN_EXPIRY
  /* time passes: the old SHO's token expires (once) */
  :: atomic { stage != S_END && !tok_exp && d_acc == A -> tok_exp = 1 }
#endif
  /* a crash of the agent at rest: the volatile sessions go (agent.db and the TRE stay) */
  :: atomic { stage != S_END && faults > 0 -> faults--; crash() }

  /* 2: attach to the old SHO with its MCIM (full access) */
  :: atomic { stage == S_ATTACH_OLD -> d_acc = A; access(r);
       if :: r == 1 -> next_stage() :: r == 2 -> fail() :: else -> skip fi }

  /* st_pcid: a PCID near its expiry (or expired) is renewed first; a failed renewal goes
   * on with the current one, except that the pristine path refuses an expired one */
  :: atomic { stage == S_PCID ->
       if
       :: pcid == PC_OK || pcid_new -> next_stage()
       :: else -> access(r);
          if
          :: r == 1 && CARRIED && d_acc == A && RO_REVOKED_A -> fail() /* TOKEN_REVOKED at the RO */
          :: r == 1 && CARRIED -> pcid_new = 1; next_stage() /* DPF: new PCID in the ICF, then the answer */
#if PCID_EXPIRY
          :: r == 1 -> /* renewal failed for RENEW_TRIES rounds, or refused */
             if
#ifndef MUT_NO_PCID_CHECK
             :: pcid == PC_EXPIRED && PROC == P_PRISTINE -> fail()
#endif
#ifndef MUT_OLD_PCID_GOES_ON /* finding F1, fixed: the old-SHO path refuses too */
             :: pcid == PC_EXPIRED && PROC == P_OLD -> fail()
#endif
             :: else -> next_stage()
             fi
#endif
          :: r == 2 -> fail()
          :: else -> skip
          fi
       fi }

  /* 3 (pristine): TRE pristine(txn): every MCIM removed, each receipt queued, one write */
  :: atomic { stage == S_PRISTINE ->
       if :: tre_slot[A] != SL_NONE -> tre_slot[A] = SL_NONE; tre_pend[A] = 1; d_gave_up = 1 :: else -> skip fi;
       sesA = 0;
       fault(ok); if :: ok -> next_stage() :: else -> crash() fi }

  /* 4-6: attach to the VNO with the PCID (restricted) */
  :: atomic { stage == S_ATTACH_VNO -> d_acc = V; access(r);
       if :: r == 1 -> next_stage() :: r == 2 -> fail() :: else -> skip fi }

  /* 7-8: DRF discovery (the TRE's own request): the order's SHO; step 8 queued once */
  :: atomic { stage == S_DISCOVER -> access(r);
       if
       :: r == 1 -> fault(ok);
#ifdef MUT_NO_READY
          if :: ok -> drf_ready = 1; next_stage() /* step 8's notification never queued */
#else
          if :: ok -> if :: !drf_ready -> drf_ready = 1; ob_ready = 1 :: else -> skip fi; next_stage()
#endif
             :: else -> skip fi
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 4 / 10: the PVA's nonce (waits until the SHO asked) */
  :: atomic { stage == S_NONCE && (pva >= 1 || !CARRIED) -> access(r);
       if
       :: r == 1 && CARRIED -> fault(ok); if :: ok -> next_stage() :: else -> skip fi
       :: r == 1 && !CARRIED -> fail() /* the old SHO carries nothing: procedure_timeout */
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 4 / 10: the quote; the verdict queued to the SHO (5 / 11) */
  :: atomic { stage == S_QUOTE -> access(r);
       if
       :: r == 1 && CARRIED -> fault(ok);
          if :: ok -> if :: pva == 1 -> pva = 2; ob_verdict = 1 :: else -> skip fi
             :: else -> skip fi;
          fault(ok); if :: ok && pva == 2 -> next_stage() :: else -> skip fi
       :: r == 1 && !CARRIED -> fail()
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 7 / 13: the package from the DPF (the TRE's own request), staged whole and verified */
  :: atomic { stage == S_DOWNLOAD && (dpf_pkg >= 1 || !CARRIED) -> access(r);
       if
       :: r == 1 && CARRIED && d_acc == A && RO_REVOKED_A -> fail() /* TOKEN_REVOKED at the RO */
       :: r == 1 && CARRIED -> fault(ok);
          if :: ok -> if :: tre_slot[B] == SL_NONE -> tre_staged = 1 :: else -> skip fi; next_stage()
             :: else -> skip fi
       :: r == 1 && !CARRIED -> fail()
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 8: the old SHO's session saved, then TRE discard(A, txn): the MCIM destroyed and the
   * receipt queued in one write; a retry finds the receipt queued and converges */
#ifndef MUT_TOKEN_BEFORE_TRE /* finding F3, fixed: the TRE first (tre_discarded) */
  :: atomic { stage == S_DISCARD && tre_slot[A] == SL_NONE && tre_pend[A] -> next_stage() }
  :: atomic { stage == S_DISCARD && !(tre_slot[A] == SL_NONE && tre_pend[A]) -> access(r);
#else
  :: atomic { stage == S_DISCARD -> access(r);
#endif
       if
       :: r == 1 -> d_saved = 1;
          if
          :: tre_slot[A] != SL_NONE -> tre_slot[A] = SL_NONE; tre_pend[A] = 1; d_gave_up = 1
          :: else -> skip
          fi;
          if
          :: tre_pend[A] -> fault(ok); if :: ok -> next_stage() :: else -> crash() fi
          :: else -> fail() /* NOT_FOUND */
          fi
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 9-10: the receipt to the old SHO with its session; its acknowledgement in the answer.
   * Anything wrong with A: retried ACK_TRIES rounds (ack_deadline), then the TRE-signed
   * receipt stands in for the acknowledgement */
  :: atomic { stage == S_RECEIPT ->
       if
       :: d_ack || d_by_receipt -> next_stage()
       :: !d_ack && !d_by_receipt && tok_exp -> /* no session left: the receipt to the RO at once */
          d_by_receipt = 1; sesA = 0; d_saved = 0; d_acc = V; next_stage()
       :: !d_ack && !d_by_receipt && !tok_exp ->
          d_acc = A; sesA = sesA || d_saved;
          fault(ok);
          if
          :: ok && sesA ->
#if HOSTILE == 1
             /* a hostile A may answer anything: a valid acknowledgement without terminating
              * (its own books lie), or, after terminating, one that does not verify
              * (dev_ack_verify) */
             if
             :: hmoves > 0 && !a_dead -> hmoves--; a_knows_txn = 1; ans = 1
             :: hmoves > 0 && !a_dead -> hmoves--; a_knows_txn = 1; ans = 0 /* nothing that verifies, no termination */
             :: true -> a_on_discard(1, 0, ans);
                if :: ans && hmoves > 0 -> hmoves--; ans = 0 :: true -> skip fi
             fi;
#else
             a_on_discard(1, 0, ans);
#endif
             fault(ok); ans = ans && ok /* the answer lost */
          :: else -> ans = 0
          fi;
          if
          :: ans -> fault(ok);
                    if
                    :: ok -> d_ack = 1; sesA = 0; d_saved = 0; d_acc = V;
                       tre_pend[A] = 0; next_stage() /* pending_done after the save */
                    :: else -> crash()
                    fi
          :: else ->
#ifdef MUT_NO_ACK_DEADLINE
             skip
#else
             d_tries++;
             if
             :: d_tries >= ACK_TRIES -> d_by_receipt = 1; sesA = 0; d_saved = 0; d_acc = V; next_stage()
             :: else -> skip
             fi
#endif
          fi
       fi }

  /* 11: the acknowledgement, or the receipt, to the DPF (over the VNO: the PCID); the DPF
   * verifies it and relays a privacy-filtered release to B; a receipt also goes to A */
  :: atomic { stage == S_RELEASE -> d_acc = V; access(r);
       if
       :: r == 1 -> fault(ok);
          if
          :: ok && d_ack -> /* verify_proof: signed by an SHO other than B */
             if :: !dpf_rel -> dpf_rel = 1; ob_release = 1 :: else -> skip fi;
#ifdef MUT_UNFILTERED_RELEASE
             know[B] = know[B] | K_A_NAME | K_A_IMSI;
#endif
             fault(ok); if :: ok -> next_stage() :: else -> skip fi
#ifdef MUT_DPF_NO_RECEIPT
          :: ok && d_by_receipt -> fail() /* the DPF takes only an acknowledgement */
#else
          :: ok && d_by_receipt && DRF_LINKS_A ->
             if :: !dpf_rel -> dpf_rel = 1; ob_release = 1; ob_relayA = 1 :: else -> skip fi;
             fault(ok); if :: ok -> tre_pend[A] = 0; next_stage() :: else -> skip fi
          :: ok && d_by_receipt && !DRF_LINKS_A -> fail() /* FORBIDDEN (verify_proof, before the stored answer) */
#endif
          :: else -> skip
          fi
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* 12 / 14: TRE install(txn): B's MCIM the active one (a retry finds it installed) */
  :: atomic { stage == S_INSTALL ->
       if
       :: tre_staged -> tre_staged = 0;
          tre_slot[A] = (tre_slot[A] == SL_ACTIVE -> SL_INACTIVE : tre_slot[A]);
          tre_slot[B] = SL_ACTIVE;
          fault(ok); if :: ok -> next_stage() :: else -> crash() fi
       :: !tre_staged && tre_slot[B] != SL_NONE -> next_stage()
       :: else -> fail()
       fi }

  /* 12 / 14: the TRE-signed status to the DPF; the report queued to B (13 / 15) */
  :: atomic { stage == S_REPORT -> access(r);
       if
       :: r == 1 && CARRIED -> fault(ok);
          if :: ok -> if :: dpf_pkg == 1 -> dpf_pkg = 2; ob_report = 1 :: else -> skip fi;
                fault(ok); if :: ok -> next_stage() :: else -> skip fi
             :: else -> skip fi
       :: r == 1 && !CARRIED -> fail()
       :: r == 2 -> fail()
       :: else -> skip
       fi }

  /* attach to B with its MCIM: SUBSCRIPTION_NOT_ACTIVE until B activated (retried) */
  :: atomic { stage == S_ATTACH_SHO && auc[B] == AUC_ACTIVE -> fault(ok);
       if :: ok -> next_stage() :: else -> skip fi }

  /* pristine path, after the full attach: the queued notices through the RO's relay */
  :: atomic { stage == S_NOTIFY ->
       if
       :: tre_pend[A] -> fault(ok);
          if
          :: ok && NOTICE_LINKS_A -> if :: !ro_noticeA -> ro_noticeA = 1; ob_relayA = 1 :: else -> skip fi;
             fault(ok); if :: ok -> tre_pend[A] = 0 :: else -> skip fi
          :: ok && !NOTICE_LINKS_A -> next_stage() /* refused: stays queued for a later attach */
          :: else -> skip
          fi
       :: else -> next_stage()
       fi }
  od
}

/* ---- a hostile SHO (HOSTILE: 1 = A, 2 = B): every request its certificate lets it make ----
 * Up to HMOVES requests, at any time, on every route of every role that an SHO's certificate
 * (mTLS) or an access token it mints for the device (it is an access network: the RO and the
 * PVA honour any access network's token) reaches, with any txn of the model's domain (T_*),
 * for the device (a body naming another device than the token's is refused by the same
 * `acc.device` test on every device-facing route, and touches no record of this device), and
 * with any statement it can sign or has seen. Each receiving handler applies the code's
 * checks (docs/model.md section 3 names the function of each); a refused request changes
 * nothing but the move budget. Routes no SHO certificate passes (the ICF's, the owners',
 * admin, the M2MES's; the RO-only and PVA-only routes of the other SHO) and statements it
 * cannot sign (the TRE's, the owner's, the PVA's, the RO's, the other SHO's) are the
 * refusals of h_refused. */
#if HOSTILE != 0
#define H HOSTILE
#define O (3 - HOSTILE)

/* a txn it can name: any value (matching nothing), its own earlier install with the device
 * (A, in a change: its DRF entry's), this procedure's once known (B: its order; A: step 9) */
inline pick_txn(t) {
  if
  :: t = T_OTHER
  :: H == A && PROC != P_INITIAL -> t = T_OLD
  :: H == B || a_knows_txn -> t = T_CUR
  fi
}

/* RO DRF: POST /v1/drf/registrations {txn t, device, sho s, state st, seq} (mcim_drf_register):
 * the caller registers only itself; registration_proven: `released` needs an entry of its
 * own or an install of its MCIM on record; `subscribed`/`preloaded` the DPF's record of an
 * install of its MCIM for (t, device), or the same state again, or subscribed -> preloaded;
 * an entry with a newer seq stands. The code refuses `subscribed` on an install overtaken by
 * B's (overtaken(), registry.c: 409 REGISTRATION_OVERTAKEN, which changes nothing); the
 * model lets A have it at any time: a superset */
inline h_register(s, st, t) {
  if
  :: s != H -> skip /* FORBIDDEN: an SHO registers only itself */
  :: s == H && H == A ->
     if
     :: st == R_RELEASED && (drf_reg[A] != R_NONE || A_INSTALL_ON_RECORD) &&
        !(drf_reg[A] == R_RELEASED && SAME_RELCUR(t == T_CUR)) ->
        hmoves--; drf_reg[A] = R_RELEASED; SET_RELCUR(t == T_CUR); drf_pinA = 1
     :: st != R_RELEASED && drf_reg[A] != R_SUBSCRIBED && t == T_OLD ->
        hmoves--; drf_reg[A] = R_SUBSCRIBED; SET_RELCUR(0); drf_pinA = 1
     :: else -> skip /* REGISTRATION_PENDING / NOT_PARTY: no proof, or nothing changes */
     fi
  :: s == H && H == B -> skip
     /* the same checks on B's own entry (released: an entry; subscribed: the DPF's install
      * record of (t, device, B), dpf_pkg == 2 for T_CUR); accepted or not, nothing in the
      * model reads B's entry (no token of B's reaches the RO, no statement to B is relayed) */
  fi
}

/* RO DPF: POST /v1/dpf/releases {txn t, device, ack | receipt} (mcim_dpf_release): a
 * `change` package of (t, device); verify_proof: an ack signed by an SHO other than the
 * package's (only its own: A's is taken, B's is CLAIM_MISMATCH), or a TRE receipt addressed
 * to the old SHO (the only one there is: step 9's, which A holds once it was sent to it) with
 * DRF_LINKS_A; after the checks, the stored answer; else the release relayed to B (and the
 * receipt to A) */
inline h_dpf_release(t, receipt) {
  if
  :: PROC != P_OLD || t != T_CUR || dpf_pkg == 0 -> skip /* NOT_FOUND */
  :: else -> skip;
     if
     :: !receipt && H == B -> skip /* CLAIM_MISMATCH: the new SHO's own ack */
     :: !receipt && H == A -> if :: !dpf_rel -> hmoves--; dpf_rel = 1; ob_release = 1 :: else -> skip fi
     :: receipt && !(H == A && a_knows_txn) -> skip /* a receipt it signed: not the TRE's */
     :: receipt && H == A && a_knows_txn && DRF_LINKS_A ->
        if :: !dpf_rel -> hmoves--; dpf_rel = 1; ob_release = 1; ob_relayA = 1 :: else -> skip fi
     :: receipt && H == A && a_knows_txn && !DRF_LINKS_A -> skip /* FORBIDDEN */
     fi
  fi
}

/* RO DPF: POST /v1/dpf/notices {txn, device, to, statement} (mcim_dpf_notice): the statement
 * TRE-signed, aud `to`, and NOTICE_LINKS_A; only A holds one (the receipt of step 9, aud A) */
inline h_dpf_notice(to) {
  if
  :: H == A && a_knows_txn && to == A && NOTICE_LINKS_A ->
     if :: !ro_noticeA -> hmoves--; ro_noticeA = 1; ob_relayA = 1 :: else -> skip fi
  :: else -> skip /* aud is not `to`, not the TRE's signature, or no entry: refused */
  fi
}

/* A move is explored where some choice of its fields passes the handler's checks (a request
 * refused whatever its fields changes nothing: a step to the same state, which would only hide
 * deadlocks); within it every choice of fields is run through the checks, and only a request
 * that changes something spends a move. */
#define MAY_REGISTER (H == A && PROC != P_INITIAL)
#define MAY_RELEASE (H == A && PROC == P_OLD && a_knows_txn && dpf_pkg >= 1 && !dpf_rel)
#define MAY_NOTICE (H == A && a_knows_txn && !ro_noticeA && !ackA && NOTICE_LINKS_A)
#ifdef MUT_NO_DEVICE_PROOF
#define MAY_PROOFLESS (H == A && a_knows_txn && dpf_pkg >= 1 && (know[A] & K_B_NAME) == 0)
#else
#define MAY_PROOFLESS 0
#endif
#define MAY_PACKAGE (H == B && ordB >= O_PROV && dpf_pkg == 0 && pva == 2)
#define MAY_VALIDATE (H == B && pva == 0)
#if defined(MUT_TOKEN_ANY_ISSUER) || defined(MUT_ORDER_READ_ANY)
#define MAY_READ_OTHER ((know[H] & (H == A -> K_B_ALL : K_A_ALL)) == 0)
#else
#define MAY_READ_OTHER 0
#endif

active proctype Hostile()
{
  byte s, st, t;
  bool x, ans;
end_h:
  do
#if HOSTILE == 1
  /* stop answering for good (and never come back): its outbox, what it carries, and every
   * request of its own stop */
  :: atomic { !a_dead && hmoves > 0 -> hmoves--; a_dead = 1 }
#endif
  /* RO: POST /v1/drf/registrations for either SHO, any state, any txn */
  :: atomic { hmoves > 0 && !a_dead && MAY_REGISTER ->
       if :: s = A :: s = B fi;
       if :: st = R_SUBSCRIBED :: st = R_PRELOADED :: st = R_RELEASED fi;
       pick_txn(t);
       h_register(s, st, t); s = 0; st = 0; t = 0 }
  /* RO: POST /v1/dpf/releases with a token it mints: its own ack, or a receipt it holds */
  :: atomic { hmoves > 0 && !a_dead && MAY_RELEASE ->
       pick_txn(t);
       if :: x = 0 :: x = 1 fi;
       h_dpf_release(t, x); t = 0; x = 0 }
  /* RO: POST /v1/dpf/notices, to either SHO, with a token it mints */
  :: atomic { hmoves > 0 && !a_dead && MAY_NOTICE ->
       if :: s = A :: s = B fi;
       h_dpf_notice(s); s = 0 }
  /* RO: POST /v1/drf/discover (any txn) or /v1/dpf/packages/{device}/{txn} with a token it
   * mints: both name the new SHO, so both need the TRE's own request
   * (mcim_role_check_device_request), which it cannot sign: refused (MUT_NO_DEVICE_PROOF:
   * answered on the token alone) */
  :: atomic { hmoves > 0 && !a_dead && MAY_PROOFLESS ->
       pick_txn(t);
       if :: t == T_CUR -> hmoves--; know[A] = know[A] | K_B_NAME :: else -> skip fi;
       t = 0 }
  /* RO: POST /v1/dpf/packages or (pristine step 12) /v1/drf/authorisations for any txn:
   * mcim_drf_order_of_party (an order of the caller at the DRF for (device, txn)) and the
   * PVA's verdict, which B holds once it got it; A has no order */
  :: atomic { hmoves > 0 && !a_dead && MAY_PACKAGE ->
       pick_txn(t);
       if :: t == T_CUR -> hmoves--; ro_on_pkg() :: else -> skip fi;
       t = 0 }
  /* PVA: POST /v1/validations for any txn: check_order_record (the RO's order record for the
   * caller); B holds its own, A none; B's books as when its outbox sends it (a B that stalls
   * its own order only holds the device until procedure_timeout, before it gave anything up).
   * (POST .../pending/{device}/{txn} with a minted token is refused without the TRE's
   * request, FIELD_MISSING, since 2026-12-07; nothing changes.) */
  :: atomic { hmoves > 0 && !a_dead && MAY_VALIDATE ->
       pick_txn(t);
       if :: t == T_CUR -> hmoves--; pva = 1; ordB = (ordB == O_ORDERED -> O_VALIDATING : ordB)
          :: else -> skip fi;
       t = 0 }
  /* the other SHO: GET /v1/devices/{device}/subscription with a token it mints (honoured only
   * by its issuer: TOKEN_WRONG_ISSUER, access_verify in peers.c; MUT_TOKEN_ANY_ISSUER: any
   * access network's); GET /v1/orders/{txn} (the RO, the PVA, admin or the owner's signed
   * query: may_read_order; MUT_ORDER_READ_ANY: any peer) */
  :: atomic { hmoves > 0 && !a_dead && MAY_READ_OTHER ->
       pick_txn(t);
       if
       :: true -> /* the subscription */
#ifdef MUT_TOKEN_ANY_ISSUER
          if
          :: O == B -> hmoves--; know[A] = know[A] | K_B_NAME | K_B_IMSI /* B's order: from step 1 */
          :: O == A && PROC != P_INITIAL -> hmoves--; know[B] = know[B] | K_A_NAME | K_A_IMSI
          :: else -> skip
          fi
#else
          skip
#endif
       :: true -> /* the order of txn t */
#ifdef MUT_ORDER_READ_ANY
          if :: O == B && t == T_CUR -> hmoves--; know[A] = know[A] | K_B_NAME | K_B_IMSI :: else -> skip fi
#else
          skip
#endif
       fi;
       t = 0 }
#if HOSTILE == 2
  /* A: POST /v1/discards with a receipt it signs itself (no token of A's and not the RO:
   * stmt_caller_check; not the TRE's signature: verify_device_statement); spends a move
   * whether or not it is taken, as before */
  :: atomic { hmoves > 0 -> hmoves--; a_on_discard(0, 0, ans) }
#endif
  /* h_refused, every other route: the other SHO's /v1/discards and /v1/notifications with its
   * own token (TOKEN_WRONG_ISSUER) or a statement not the TRE's; its /v1/releases,
   * /v1/reports, /v1/devices/ready (caller must be the RO: peer_order_request), /v1/verdicts
   * (the PVA), /v1/orders (the owner's signature), attach (AKA with a key it lacks); the RO's
   * /v1/dpf/status, /v1/dpf/pcid (the TRE's signature), /v1/icf/* and /v1/drf/owners (the
   * M2MES, access networks of the ICF), handovers (the owner's key), /v1/admin/*; the PVA's
   * quote (the TRE's signature), /v1/rims (the M2MES): each refused, nothing changes */
  od
}
#endif

init
{
  atomic {
    know[A] = K_A_ALL; know[B] = K_B_ALL;
#if PCID_EXPIRY
    if :: pcid = PC_OK :: pcid = PC_NEAR :: pcid = PC_EXPIRED fi;
#endif
    if
    :: PROC == P_INITIAL -> stage = S_ATTACH_VNO
    :: PROC == P_OLD -> tre_slot[A] = SL_ACTIVE; auc[A] = AUC_ACTIVE; drf_reg[A] = R_SUBSCRIBED;
       stage = S_ATTACH_OLD; ob_validate = 1 /* step 1: the new SHO asks at once (3) */
    :: PROC == P_PRISTINE -> tre_slot[A] = SL_ACTIVE; auc[A] = AUC_ACTIVE; drf_reg[A] = R_SUBSCRIBED;
       stage = S_PCID; d_acc = A
    fi;
    /* A hostile A may never have sent its registration of the install (step 15 is its own
     * to send): no entry, only the DPF's record of the install (finding F5) */
    if
    :: HOSTILE == 1 && PROC != P_INITIAL -> drf_reg[A] = R_NONE
    :: true -> skip
    fi;
    /* an honest A whose registration of the install is late (LATE_REG_A) */
    if
    :: LATE_REG_A && PROC != P_INITIAL -> drf_reg[A] = R_NONE; ob_subA = 1
    :: else -> skip
    fi
  }
}
