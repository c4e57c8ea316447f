/* The device agent's OpenSSL: only the algorithms it uses (docs/device.md, "Footprint").
 *
 * OpenSSL 3 builds, at the first fetch of an operation in a library context, the method of
 * every algorithm its providers offer for it (calling each one's get_params): the first
 * cipher fetched touches the code of every cipher the default provider has, about 1 MiB of
 * libcrypto made resident, and its names fill the heap. mcim_crypto_subset_init makes the
 * default library context's one provider a filter, "mcim-subset", that offers the default
 * provider's implementations of the algorithms the agent uses and nothing else; the default
 * provider itself is loaded in a library context of its own. Call it once, before anything
 * uses OpenSSL (the process's start); false if it could not be set up. */
#ifndef MCIM_CRYPTO_SUBSET_H
#define MCIM_CRYPTO_SUBSET_H

#include <stdbool.h>

bool mcim_crypto_subset_init(void);

#endif
