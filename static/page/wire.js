// @ts-check
/**
 * The protocol 1.1 energy evidence as the page reads it: JSDoc types only,
 * one per payload, with exactly the wire's field names (docs/PROTOCOL.md),
 * so that `make lint` (tsc --checkJs) rejects a misspelt or invented field.
 * A payload comes from the network, so every field is wrapped in
 * {@link Untrusted}: its name is checked, its value has to be checked by the
 * reader (`typeof`, `Array.isArray`) before use.
 *
 * @example
 * import { untrusted } from './wire.js'
 * const p = untrusted(message.payload)          // Untrusted<EnergyPayload>
 * const ev = untrusted(p.evidence)              // Untrusted<EnergyEvidence>
 * const tps = typeof ev.tps === 'number' ? ev.tps : 0
 * ev.tpz                                        // tsc: no such field on the wire
 *
 * @module page/wire
 */

/**
 * Every field optional and of unknown value: the field names of `T`, nothing else.
 * @template T
 * @typedef {{ [K in keyof T]?: unknown }} Untrusted
 */

/**
 * One token of the primary model listed by an energy frame.
 * @typedef {object} EvidenceToken
 * @property {number} index position in this model's answer (0-based)
 * @property {number} dtMs its inter-arrival time; the first token's is the TTFT
 * @property {number | null} certainty 1 - H/ln K of its top-K; null without one
 * @property {number} energy E right after it
 */

/**
 * One council member in an energy frame.
 * @typedef {object} EvidenceModel
 * @property {string} modelId
 * @property {number} energy E of this member now
 * @property {string} state its session state
 * @property {number} tps
 * @property {number | null} certainty of its last token
 * @property {number | null} dtMs of its last token
 * @property {number} tokens of its answer so far
 */

/**
 * `energy_update.payload.evidence` (1.1).
 * @typedef {object} EnergyEvidence
 * @property {string} sessionId "" when idle
 * @property {string} state IDLE | CHARGING | FLOWING | STALLING | SATURATED | DRAINED
 * @property {string} profile Lite | Dual | Studio
 * @property {EvidenceToken[]} tokens this frame's tokens of the primary model, at most the latest 8
 * @property {number} tokensOmitted this frame's tokens beyond those listed
 * @property {number} tps
 * @property {number | null} certainty of the last token
 * @property {number | null} entropy of the last token (nats)
 * @property {number | null} sinceTokenMs null before the first token
 * @property {boolean} stall
 * @property {boolean} burst
 * @property {number | null} ttftMs
 * @property {number} energyUnits accumulated this answer
 * @property {EvidenceModel[]} [models] during a council only, primary first
 * @property {number} [ensembleEnergy] during a council only
 */

/**
 * `energy_update.payload` (1.0 fields, and `evidence` in 1.1).
 * @typedef {object} EnergyPayload
 * @property {number} totalEnergy E of the primary (the council's mean during a council)
 * @property {number} deltaEnergy
 * @property {number} tokensGenerated
 * @property {number} processingTime
 * @property {string} modelId
 * @property {Record<string, number>} [energyDistribution]
 * @property {EnergyEvidence} [evidence] 1.1 only
 */

/**
 * One token's evidence in a token_stream (1.1).
 * @typedef {object} TokenStreamEvidence
 * @property {number} dtMs
 * @property {number[] | null} topK at most 8 probabilities, never candidate texts
 */

/**
 * `token_stream.payload`.
 * @typedef {object} TokenStreamPayload
 * @property {string[]} tokens
 * @property {boolean} isComplete
 * @property {string} sessionId
 * @property {string} modelId
 * @property {number} [energyCost]
 * @property {number} [firstIndex] 1.1: index of its first token in this model's answer
 * @property {TokenStreamEvidence[]} [tokenEvidence] 1.1: one per token
 * @property {boolean} [textOmitted] 1.1: tokens replaced by "" (the recording kept no text)
 */

/**
 * `interference_event.payload`.
 * @typedef {object} InterferencePayload
 * @property {string} patternType
 * @property {string[]} models
 * @property {number} intensity
 * @property {number} coherenceScore
 * @property {{method: string, disagreement: number, window: number}} [evidence] 1.1
 */

/**
 * `resonance_event.payload`.
 * @typedef {object} ResonancePayload
 * @property {string} resonanceType
 * @property {number} frequency
 * @property {number} amplitude
 * @property {string[]} participants
 * @property {number} [phase]
 * @property {{disagreement: number, tpsRatio: number}} [evidence] 1.1
 */

/**
 * `startup_complete.payload`, the fields the energy view reads.
 * @typedef {object} StartupPayload
 * @property {string} model
 * @property {string} tier Low-Tier | Mid-Tier | High-Tier
 */

/**
 * A payload as it arrives (an object, or not), viewed through its field names.
 * @template T
 * @param {unknown} payload
 * @returns {Untrusted<T>}
 */
export function untrusted(payload) {
  return payload !== null && typeof payload === 'object' ? /** @type {Untrusted<T>} */ (payload) : {}
}

/**
 * The items of an array field that are objects, each viewed through `T`'s
 * field names (anything else is dropped); [] when the field is not an array.
 * @template T
 * @param {unknown} list
 * @returns {Untrusted<T>[]}
 */
export function untrustedList(list) {
  if (!Array.isArray(list)) return []
  return list.filter((x) => x !== null && typeof x === 'object')
}
