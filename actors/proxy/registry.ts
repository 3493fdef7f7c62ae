/**
 * The open sessions and their bearer keys, plus tombstones of ended/exported ones (so a late request is
 * told 410 "ended" rather than 404 "never existed"). Authentication lives here: which session a request
 * may act on, given the session id of its URL (if any) and its key.
 */
import { fail } from '../../runtime/errors.ts'
import { Session } from './session.ts'

/** how many gone session ids (and keys) are remembered */
const TOMBSTONES = 65536

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>()
  private readonly keys = new Map<string, Session>()
  private readonly gone = new Map<string, true>()

  get size(): number {
    return this.sessions.size
  }

  all(): Session[] {
    return [...this.sessions.values()]
  }

  open(id: string, meta: Record<string, unknown> | undefined, now: number): Session {
    if (this.sessions.has(id) || this.gone.has(id))
      throw fail('PRX_ERR_BAD_REQUEST', `session id ${id} already used`)
    const s = new Session(id, meta, now)
    this.sessions.set(id, s)
    this.keys.set(s.apiKey, s)
    return s
  }

  /** The session `id` (PRX_ERR_NO_SESSION, or PRX_ERR_SESSION_ENDED once exported or swept). */
  get(id: string): Session {
    const s = this.sessions.get(id)
    if (s) return s
    if (this.gone.has(id)) throw fail('PRX_ERR_SESSION_ENDED', `${id} was exported or expired`)
    throw fail('PRX_ERR_NO_SESSION', id)
  }

  /** Forget a session; its id and key become tombstones. */
  drop(s: Session): void {
    this.sessions.delete(s.id)
    this.keys.delete(s.apiKey)
    for (const k of [s.id, s.apiKey]) {
      this.gone.set(k, true)
      if (this.gone.size > TOMBSTONES) this.gone.delete(this.gone.keys().next().value!)
    }
  }

  /**
   * The active session a request may act on. `pathSessionId` comes from a session-scoped URL
   * (/sessions/:id/v1/…); `bearer` is the Authorization key. 401 no/unknown key, 403 another session's
   * key, 404 unknown session, 410 ended session.
   */
  authenticate(pathSessionId: string | undefined, bearer: string | undefined): Session {
    if (!bearer) throw fail('PRX_ERR_AUTH_MISSING')
    const owner = this.keys.get(bearer)
    if (pathSessionId !== undefined) {
      const s = this.sessions.get(pathSessionId)
      if (!s) {
        if (this.gone.has(pathSessionId)) throw fail('PRX_ERR_SESSION_ENDED', pathSessionId)
        throw fail('PRX_ERR_NO_SESSION', pathSessionId)
      }
      if (!owner) {
        if (this.gone.has(bearer))
          throw fail('PRX_ERR_FORBIDDEN', 'the key belongs to another, ended session')
        throw fail('PRX_ERR_AUTH_INVALID')
      }
      if (owner !== s) throw fail('PRX_ERR_FORBIDDEN', `key is not the key of ${pathSessionId}`)
    } else if (!owner) {
      if (this.gone.has(bearer)) throw fail('PRX_ERR_SESSION_ENDED')
      throw fail('PRX_ERR_AUTH_INVALID')
    }
    if (owner.state === 'ended') throw fail('PRX_ERR_SESSION_ENDED', owner.id)
    return owner
  }
}
