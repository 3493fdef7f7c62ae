/**
 * Telecom user side: a simulated phone (`device`) in its surroundings (SPEC §4.3 "Phone model").
 * User tools are what the customer can do on the phone when the agent asks; env functions break the
 * phone for task setup and assert its state for evaluation. Every write tool answers with its update
 * and the status bar.
 */
import { FloatRules, pyFloatRepr, pyRound } from '../pyjson.ts'
import { type EnvFn, obj, p, str, type ToolDef, type Toolkit, toolMap } from '../tools.ts'

type Obj = Record<string, any>
type Tech = 'none' | '2G' | '3G' | '4G' | '5G'
type Signal = 'none' | 'poor' | 'fair' | 'good' | 'excellent'

export interface PhoneState {
  db: { device: Obj; surroundings: Obj }
}

export const phoneFloats = new FloatRules(['amount_due'])

const DEFAULT_APN = () => ({
  apn_name: 'internet',
  reset_at_reboot: false,
  mms_apn: 'mms',
  mmsc_url: 'http://mms.carrier.com/mms/wapenc',
  mms_proxy: null,
  mms_port: null,
})
const MODES = ['4g_5g_preferred', '4g_only', '3g_only', '2g_only']

function normalize(db: Obj): PhoneState['db'] {
  const d = (db.device ??= {})
  const defaults: Obj = {
    sim_card_status: 'active',
    sim_card_missing: false,
    airplane_mode: false,
    network_signal_strength: 'good',
    network_technology_connected: '4G',
    network_connection_status: 'connected',
    battery_level: 80,
    data_enabled: true,
    roaming_enabled: false,
    network_mode_preference: '4g_5g_preferred',
    active_apn_settings: DEFAULT_APN(),
    wifi_enabled: false,
    wifi_connected: false,
    wifi_ssid: null,
    wifi_signal_strength: 'none',
    wifi_calling_enabled: false,
    wifi_calling_mms_over_wifi: false,
    data_saver_mode: false,
    vpn_enabled_setting: false,
    vpn_connected: false,
    vpn_details: null,
    app_statuses: {},
  }
  for (const [k, v] of Object.entries(defaults)) if (!(k in d)) d[k] = v
  d.active_apn_settings = { ...DEFAULT_APN(), ...d.active_apn_settings }
  const s = (db.surroundings ??= {})
  const sd: Obj = {
    name: null,
    phone_number: null,
    is_abroad: false,
    roaming_allowed: false,
    signal_strength: { '2G': 'poor', '3G': 'fair', '4G': 'good', '5G': 'excellent' },
    mobile_data_usage_exceeded: false,
    line_active: true,
    payment_request: null,
  }
  for (const [k, v] of Object.entries(sd)) if (!(k in s)) s[k] = v
  return db as PhoneState['db']
}

// --- the phone model ------------------------------------------------------------------------------
const sim = (d: Obj): string => (d.sim_card_missing ? 'missing' : d.sim_card_status)

function networkSearch(st: PhoneState): void {
  const { device: d, surroundings: s } = st.db
  const signalOf = (t: Tech): Signal => (s.signal_strength?.[t] ?? 'none') as Signal
  if (sim(d) === 'active') {
    d.network_connection_status = 'connected'
    let tech: Tech
    switch (d.network_mode_preference) {
      case '4g_5g_preferred':
        tech = signalOf('5G') === 'none' ? '4G' : '5G'
        break
      case '3g_only':
        tech = '3G'
        break
      case '2g_only':
        tech = '2G'
        break
      default:
        tech = '4G'
    }
    d.network_technology_connected = tech
    d.network_signal_strength = signalOf(tech)
  } else noService(d)
  if (d.airplane_mode || d.active_apn_settings.apn_name === 'broken' || !s.line_active) noService(d)
}
function noService(d: Obj): void {
  d.network_connection_status = 'no_service'
  d.network_technology_connected = 'none'
  d.network_signal_strength = 'none'
}

export function mobileDataWorking(st: PhoneState): boolean {
  const { device: d, surroundings: s } = st.db
  if (d.airplane_mode || d.network_signal_strength === 'none') return false
  if (d.network_connection_status === 'no_service') return false
  if (s.is_abroad && (!d.roaming_enabled || !s.roaming_allowed)) return false
  if (!d.data_enabled) return false
  return !s.mobile_data_usage_exceeded
}

const TECH_RANGE: Record<string, [number, number]> = {
  '2G': [0.1, 0.4],
  '3G': [1, 5],
  '4G': [10, 100],
  '5G': [50, 500],
}
const SIGNAL_FACTOR: Record<string, number> = { poor: 0.2, fair: 0.5, good: 0.8, excellent: 1 }

export function speedTest(st: PhoneState): { speed: number | null; desc: string } {
  const d = st.db.device
  if (!mobileDataWorking(st)) return { speed: null, desc: 'No Connection' }
  let f = d.vpn_connected && d.vpn_details?.server_performance === 'poor' ? 0.1 : 1
  if (d.data_saver_mode) f *= 0.2
  const [lo, hi] = TECH_RANGE[d.network_technology_connected] ?? [0, 0]
  const raw = ((lo + hi) / 2) * (SIGNAL_FACTOR[d.network_signal_strength] ?? 0) * f
  const speed = pyRound(raw, 2)
  const desc =
    speed < 1 ? 'Very Poor' : speed < 5 ? 'Poor' : speed < 25 ? 'Fair' : speed < 100 ? 'Good' : 'Excellent'
  return { speed, desc }
}

export function canSendMms(st: PhoneState): boolean {
  const d = st.db.device
  if (!mobileDataWorking(st)) return false
  if (d.network_technology_connected === '2G') return false
  if (d.wifi_calling_enabled && d.wifi_calling_mms_over_wifi) return false
  if (!d.active_apn_settings.mmsc_url) return false
  const m = d.app_statuses.messaging
  return !!m && !!m.permissions?.sms && !!m.permissions?.storage
}

const SIGNAL_ICON: Record<string, string> = {
  none: '📵 No Signal',
  poor: '📶¹ Poor',
  fair: '📶² Fair',
  good: '📶³ Good',
  excellent: '📶⁴ Excellent',
}

export function statusBar(st: PhoneState): string {
  const d = st.db.device
  const parts: string[] = []
  if (d.airplane_mode) parts.push('✈️ Airplane Mode')
  else {
    parts.push(SIGNAL_ICON[d.network_signal_strength] ?? SIGNAL_ICON.none)
    if (d.network_technology_connected !== 'none') parts.push(d.network_technology_connected)
    if (d.data_enabled && d.network_technology_connected !== 'none') {
      parts.push('📱 Data Enabled')
      if (d.data_saver_mode) parts.push('🔽 Data Saver')
    } else parts.push('📵 Data Disabled')
  }
  if (d.wifi_enabled && d.wifi_connected)
    parts.push(d.wifi_ssid ? `📡 Connected to ${d.wifi_ssid}` : '📡 Enabled')
  if (d.vpn_connected) parts.push('🔒 VPN Connected')
  parts.push(`🔋 ${d.battery_level}%`)
  return parts.join(' | ')
}

const withBar = (st: PhoneState, update: string) => `${update}\nStatus Bar: ${statusBar(st)}`
const onOff = (b: boolean) => (b ? 'ON' : 'OFF')

function toggleAirplane(st: PhoneState): boolean {
  const d = st.db.device
  const wasOn = d.airplane_mode
  d.airplane_mode = !wasOn
  if (wasOn) d.network_connection_status = 'searching'
  if (!wasOn || d.wifi_enabled) {
    d.wifi_connected = false
    d.wifi_ssid = null
    d.wifi_signal_strength = 'none'
  }
  if (!wasOn && d.vpn_connected) disconnectVpn(st)
  networkSearch(st)
  return d.airplane_mode
}
function toggleData(st: PhoneState): boolean {
  st.db.device.data_enabled = !st.db.device.data_enabled
  networkSearch(st)
  return st.db.device.data_enabled
}
function toggleRoaming(st: PhoneState): boolean {
  st.db.device.roaming_enabled = !st.db.device.roaming_enabled
  networkSearch(st)
  return st.db.device.roaming_enabled
}
function disconnectVpn(st: PhoneState): boolean {
  const d = st.db.device
  if (!d.vpn_connected) return false
  d.vpn_connected = false
  d.vpn_details = null
  return true
}
function connectVpn(st: PhoneState): boolean {
  const d = st.db.device
  if (d.vpn_connected) return false
  d.vpn_connected = true
  d.vpn_details = { server_address: '192.168.1.1', protocol: 'OpenVPN', server_performance: 'excellent' }
  return true
}
function permissionsList(perms: Obj): string[] {
  return Object.entries(perms)
    .filter(([, v]) => v)
    .map(([k]) => k.replace(/_/g, ' ').toLowerCase())
}

const SIM_TEXT: Record<string, string> = {
  active: 'Your SIM card is active and working.',
  missing: 'No SIM card detected in the phone.',
  locked_pin: 'The SIM card is locked with a PIN code.',
  locked_puk: 'The SIM card is locked with a PUK code.',
}
const SPEED_ADVICE: Record<string, string> = {
  'Very Poor': 'Connection is very slow. Basic web browsing might be difficult.',
  Poor: 'Connection is slow. Web browsing may be sluggish, streaming difficult.',
  Fair: 'Connection is okay for web browsing and some standard definition streaming.',
  Good: 'Connection is good for most activities, including HD streaming.',
  Excellent: 'Connection is very fast.',
}

const r = (name: string, description: string, run: (s: PhoneState) => string): ToolDef<PhoneState> => ({
  name,
  kind: 'read',
  description,
  params: {},
  run: (s) => run(s),
})
const w = (name: string, description: string, run: (s: PhoneState) => string): ToolDef<PhoneState> => ({
  name,
  kind: 'write',
  description,
  params: {},
  run: (s) => run(s),
})

const tools: ToolDef<PhoneState>[] = [
  r(
    'check_status_bar',
    "Shows what icons are currently visible in your phone's status bar (the area at the top of the screen): network signal, mobile data status, Wi-Fi, VPN and battery level.",
    (s) => `Status Bar: ${statusBar(s)}`,
  ),
  r(
    'check_network_status',
    "Checks your phone's connection to cellular networks and Wi-Fi: airplane mode, SIM, signal strength, network type, mobile data and data roaming.",
    (s) => {
      const d = s.db.device
      const lines = [
        `Airplane Mode: ${onOff(d.airplane_mode)}`,
        `SIM Card Status: ${sim(d)}`,
        `Cellular Connection: ${d.network_connection_status}`,
        `Cellular Signal: ${d.network_signal_strength}`,
        `Cellular Network Type: ${d.network_technology_connected}`,
        `Mobile Data Enabled: ${d.data_enabled ? 'Yes' : 'No'}`,
        `Data Roaming Enabled: ${d.roaming_enabled ? 'Yes' : 'No'}`,
        `Wi-Fi Radio: ${onOff(d.wifi_enabled)}`,
        `Wi-Fi Connected: ${d.wifi_connected ? 'Yes' : 'No'}`,
      ]
      if (d.wifi_connected) lines.push(`Connected Wi-Fi Network: ${d.wifi_ssid}`)
      return lines.join('\n')
    },
  ),
  r(
    'check_network_mode_preference',
    'Shows the current network mode preference.',
    (s) => `Network Mode Preference: ${s.db.device.network_mode_preference}`,
  ),
  {
    name: 'set_network_mode_preference',
    kind: 'write',
    description:
      'Changes the type of cellular network your phone prefers to connect to (e.g., 5G, LTE/4G, 3G). Higher-speed networks (LTE/5G) provide faster data but may use more battery.',
    params: { mode: p(str('The network mode preference.', { enum: MODES })) },
    run: (s, a) => {
      const mode = a.mode as string
      if (!MODES.includes(mode))
        return withBar(
          s,
          `Failed to set network mode: '${mode}' is not a valid option. Please use one of: ${MODES.join(', ')}`,
        )
      s.db.device.network_mode_preference = mode
      networkSearch(s)
      return withBar(s, `Preferred Network Mode set to: ${mode}`)
    },
  },
  r(
    'run_speed_test',
    'Measures your current internet connection speed (download speed) and what activities it can support.',
    (s) => {
      const { speed, desc } = speedTest(s)
      if (speed === null) return `Speed test failed: ${desc}.`
      return `Speed Test Result: ${speed.toFixed(2)} Mbps (${desc}). ${SPEED_ADVICE[desc] ?? ''}`
    },
  ),
  w(
    'toggle_airplane_mode',
    'Toggles Airplane Mode ON or OFF. When ON, it disconnects all wireless communications including cellular, Wi-Fi, and Bluetooth.',
    (s) => withBar(s, `Airplane Mode is now ${onOff(toggleAirplane(s))}.`),
  ),
  r(
    'check_sim_status',
    'Checks if your SIM card is working correctly and displays its current status: active, missing, or locked with a PIN or PUK code.',
    (s) => SIM_TEXT[sim(s.db.device)] ?? `Unknown SIM status: ${sim(s.db.device)}`,
  ),
  w(
    'reseat_sim_card',
    'Removes and reinserts your SIM card. This can help resolve recognition issues.',
    (s) => {
      s.db.device.sim_card_missing = false
      networkSearch(s)
      return withBar(s, 'SIM card re-seated successfully.')
    },
  ),
  w(
    'toggle_data',
    "Toggles your phone's mobile data connection ON or OFF: whether the phone can use cellular data when Wi-Fi is unavailable.",
    (s) => withBar(s, `Mobile Data is now ${onOff(toggleData(s))}.`),
  ),
  w(
    'toggle_roaming',
    "Toggles Data Roaming ON or OFF. When ON, your phone can use data networks in areas outside your carrier's coverage.",
    (s) => withBar(s, `Data Roaming is now ${onOff(toggleRoaming(s))}.`),
  ),
  r(
    'check_data_restriction_status',
    'Checks if your phone has any data-limiting features active. Shows if Data Saver mode is on.',
    (s) =>
      s.db.device.data_saver_mode ? 'Data Saver mode is ON (limits data usage).' : 'Data Saver mode is OFF.',
  ),
  w(
    'toggle_data_saver_mode',
    'Toggles Data Saver mode ON or OFF. When ON, it reduces data usage, which may affect data speed.',
    (s) => {
      s.db.device.data_saver_mode = !s.db.device.data_saver_mode
      return withBar(s, `Data Saver Mode is now ${onOff(s.db.device.data_saver_mode)}.`)
    },
  ),
  r(
    'check_apn_settings',
    "Checks the technical APN settings your phone uses to connect to your carrier's mobile data network: APN name and the MMSC URL for picture messaging.",
    (s) => {
      const apn = s.db.device.active_apn_settings
      return `Current APN Name: ${apn.apn_name || 'Not Set'}\nMMSC URL (for picture messages): ${apn.mmsc_url || 'Not Set'}\n(These are technical settings, usually best left unchanged.)`
    },
  ),
  {
    name: 'set_apn_settings',
    kind: 'write',
    description: 'Sets the APN settings for the phone.',
    params: {
      apn_settings: p(
        obj(
          {
            apn_name: str('APN name', { enum: ['internet', 'broken'] }),
            reset_at_reboot: { type: 'boolean' },
            mms_apn: { type: 'string' },
            mmsc_url: { anyOf: [{ type: 'string' }, { type: 'null' }] },
            mms_proxy: { anyOf: [{ type: 'string' }, { type: 'null' }] },
            mms_port: { anyOf: [{ type: 'integer' }, { type: 'null' }] },
          },
          [],
          'APNSettings',
        ),
      ),
    },
    run: (s, a) => {
      const next = { ...DEFAULT_APN(), ...(a.apn_settings as Obj) }
      if (next.apn_name !== 'internet' && next.apn_name !== 'broken')
        throw new Error(`apn_name: Input should be 'internet' or 'broken'`)
      s.db.device.active_apn_settings = next
      networkSearch(s)
      return withBar(s, `APN settings set to: ${next.apn_name}`)
    },
  },
  w(
    'reset_apn_settings',
    'Resets your APN settings to the default settings (applied at the next reboot).',
    (s) => {
      s.db.device.active_apn_settings.reset_at_reboot = true
      networkSearch(s)
      return withBar(s, 'APN settings will reset at reboot.')
    },
  ),
  r(
    'check_wifi_status',
    "Checks your Wi-Fi connection status: whether Wi-Fi is on, which network you're connected to (if any), and the signal strength.",
    (s) => {
      const d = s.db.device
      if (!d.wifi_enabled) return 'Wi-Fi is turned OFF.'
      if (d.wifi_connected)
        return `Wi-Fi is ON and connected to '${d.wifi_ssid}'. Signal strength: ${d.wifi_signal_strength}.`
      return 'Wi-Fi is ON but not connected to any network.'
    },
  ),
  w(
    'toggle_wifi',
    "Toggles your phone's Wi-Fi radio ON or OFF: whether your phone can discover and connect to wireless networks.",
    (s) => {
      const d = s.db.device
      if (d.airplane_mode) return withBar(s, 'Cannot change Wi-Fi settings while Airplane Mode is ON.')
      d.wifi_enabled = !d.wifi_enabled
      if (!d.wifi_enabled) {
        d.wifi_connected = false
        d.wifi_ssid = null
        d.wifi_signal_strength = 'none'
      }
      return withBar(s, `Wi-Fi is now ${onOff(d.wifi_enabled)}.`)
    },
  ),
  r(
    'check_wifi_calling_status',
    'Checks if Wi-Fi Calling is enabled on your device (calls over Wi-Fi instead of the cellular network).',
    (s) => `Wi-Fi Calling is currently turned ${onOff(s.db.device.wifi_calling_enabled)}.`,
  ),
  w(
    'toggle_wifi_calling',
    'Toggles Wi-Fi Calling ON or OFF. This feature lets you make and receive calls over Wi-Fi instead of the cellular network.',
    (s) => {
      s.db.device.wifi_calling_enabled = !s.db.device.wifi_calling_enabled
      return withBar(s, `Wi-Fi Calling is now ${onOff(s.db.device.wifi_calling_enabled)}.`)
    },
  ),
  r(
    'check_vpn_status',
    "Checks if you're using a VPN (Virtual Private Network) connection and shows its details.",
    (s) => {
      const d = s.db.device
      if (d.vpn_connected)
        return d.vpn_details
          ? `VPN is ON and connected. Details: ${pyDictRepr(d.vpn_details)}`
          : 'VPN is ON and connected (no specific details available).'
      if (d.vpn_enabled_setting) return 'VPN is turned ON in settings, but currently not connected.'
      return 'VPN is turned OFF.'
    },
  ),
  w('connect_vpn', 'Connects to your VPN (Virtual Private Network).', (s) =>
    connectVpn(s) ? withBar(s, 'VPN connected successfully.') : 'VPN already connected.',
  ),
  w(
    'disconnect_vpn',
    'Disconnects any active VPN (Virtual Private Network) connection, which might affect connection speed or access to content.',
    (s) =>
      withBar(
        s,
        disconnectVpn(s) ? 'VPN disconnected successfully.' : 'No active VPN connection to disconnect.',
      ),
  ),
  r(
    'check_installed_apps',
    'Returns the name of all installed apps on the phone.',
    (s) =>
      `The following apps are installed on the phone: ${Object.keys(s.db.device.app_statuses).join(', ')}`,
  ),
  {
    name: 'check_app_status',
    kind: 'read',
    description: 'Checks detailed information about a specific app, including its permissions.',
    params: { app_name: p(str('The name of the app.')) },
    run: (s, a) => {
      const app = s.db.device.app_statuses[a.app_name as string]
      if (!app) return `App '${a.app_name}' not found on this phone.`
      const perms = permissionsList(app.permissions ?? {})
      const lines = [`Status for App: ${a.app_name}`]
      if (!perms.length) lines.push(' - Permissions: None granted.')
      else lines.push(' - Permissions Granted:', ...perms.map((x) => `   - ${x}`))
      return lines.join('\n')
    },
  },
  {
    name: 'check_app_permissions',
    kind: 'read',
    description: 'Checks what permissions a specific app currently has (storage, sms, phone, network, ...).',
    params: { app_name: p(str('The name of the app.')) },
    run: (s, a) => {
      const app = s.db.device.app_statuses[a.app_name as string]
      if (!app) return `App '${a.app_name}' not found on this phone.`
      const perms = permissionsList(app.permissions ?? {})
      return perms.length
        ? `App '${a.app_name}' has permission for: ${perms.join(', ')}.`
        : `App '${a.app_name}' currently has no permissions granted.`
    },
  },
  {
    name: 'grant_app_permission',
    kind: 'write',
    description:
      'Gives a specific permission to an app (like access to storage or sms). Required for some app functions to work properly.',
    params: {
      app_name: p(str('The name of the app to grant the permission to.')),
      permission: p(str('The permission to grant, should be lowercase.')),
    },
    run: (s, a) => {
      const app = s.db.device.app_statuses[a.app_name as string]
      const perm = (a.permission as string).toLowerCase()
      let msg: string
      if (!app) msg = `Error. App '${a.app_name}' not found. Cannot grant permission.`
      else if (!(perm in app.permissions))
        msg = `Error. Permission '${perm}' not tracked for app '${a.app_name}', available permissions: [${Object.keys(
          app.permissions,
        )
          .map((k) => `'${k}'`)
          .join(', ')}]`
      else {
        app.permissions[perm] = true
        msg = `Success. Permission '${perm}' granted to app '${a.app_name}'.`
      }
      return withBar(s, msg)
    },
  },
  r('can_send_mms', 'Checks if the default messaging app can send MMS messages.', (s) =>
    canSendMms(s)
      ? 'Your messaging app can send MMS messages.'
      : 'Your messaging app cannot send MMS messages.',
  ),
  w(
    'reboot_device',
    'Restarts your phone completely. This can help resolve many temporary software glitches by refreshing all running services and connections.',
    (s) => {
      const d = s.db.device
      const lines: string[] = []
      if (d.active_apn_settings.reset_at_reboot) {
        lines.push('Resetting APN settings...')
        d.active_apn_settings = DEFAULT_APN()
      }
      lines.push('Restarting network services...')
      d.network_connection_status = 'searching'
      networkSearch(s)
      return withBar(s, lines.join('\n'))
    },
  ),
  r('check_payment_request', 'Checks if the agent has sent you a payment request.', (s) => {
    const pr = s.db.surroundings.payment_request
    if (!pr) return 'No payment request has been made.'
    return `You have a payment request for bill ${pr.bill_id} of ${pyFloatRepr(pr.amount_due)} USD.`
  }),
  w('make_payment', 'Makes a payment for the bill that the agent has sent you.', (s) => {
    const pr = s.db.surroundings.payment_request
    if (!pr) return 'You do not have a payment request.'
    pr.paid = true
    return `Payment of ${pyFloatRepr(pr.amount_due)} USD has been made for bill ${pr.bill_id}.`
  }),
]

/** Python `str(dict)` of a flat dict of strings (VPN details). */
function pyDictRepr(o: Obj): string {
  return `{${Object.entries(o)
    .map(([k, v]) => `'${k}': ${typeof v === 'string' ? `'${v}'` : String(v)}`)
    .join(', ')}}`
}

const envFns: Record<string, EnvFn<PhoneState>> = {
  set_user_info: (s, a) => {
    s.db.surroundings.name = a.name
    s.db.surroundings.phone_number = a.phone_number
  },
  set_user_location: (s, a) => {
    s.db.surroundings.is_abroad = a.abroad
  },
  turn_airplane_mode_on: (s) => {
    if (!s.db.device.airplane_mode) toggleAirplane(s)
    return 'Airplane Mode is now ON.'
  },
  turn_airplane_mode_off: (s) => {
    if (s.db.device.airplane_mode) toggleAirplane(s)
    return 'Airplane Mode is now OFF.'
  },
  turn_data_on: (s) => {
    s.db.device.data_enabled = true
    return 'Data connection restored.'
  },
  turn_data_off: (s) => {
    if (s.db.device.data_enabled) toggleData(s)
    return 'Data connection broken.'
  },
  turn_roaming_on: (s) => {
    if (!s.db.device.roaming_enabled) toggleRoaming(s)
    return 'Data Roaming is now ON.'
  },
  turn_roaming_off: (s) => {
    if (s.db.device.roaming_enabled) toggleRoaming(s)
    return 'Data Roaming is now OFF.'
  },
  turn_data_saver_mode_on: (s) => {
    s.db.device.data_saver_mode = true
    return 'Data Saver Mode is now ON.'
  },
  turn_data_saver_mode_off: (s) => {
    s.db.device.data_saver_mode = false
    return 'Data Saver Mode is now OFF.'
  },
  unseat_sim_card: (s) => {
    s.db.device.sim_card_missing = true
    networkSearch(s)
    return 'SIM card un-seated successfully.'
  },
  lock_sim_card: (s, a) => {
    if (a.mode === 'pin') s.db.device.sim_card_status = 'locked_pin'
    else if (a.mode === 'puk') s.db.device.sim_card_status = 'locked_puk'
    else throw new Error(`lock_sim_card: mode must be 'pin' or 'puk', got ${JSON.stringify(a.mode)}`)
    networkSearch(s)
    return `SIM card locked successfully in ${a.mode} mode.`
  },
  break_apn_settings: (s) => {
    s.db.device.active_apn_settings.apn_name = 'broken'
    networkSearch(s)
    return 'APN settings broken. Please call reset_apn_settings() to fix.'
  },
  break_apn_mms_setting: (s) => {
    s.db.device.active_apn_settings.mmsc_url = null
    return 'APN MMS setting broken. Please call reset_apn_settings() to fix.'
  },
  break_vpn: (s) => {
    connectVpn(s)
    s.db.device.vpn_details.server_performance = 'poor'
    return 'VPN connection broken.'
  },
  set_wifi_calling: (s, a) => {
    s.db.device.wifi_calling_enabled = a.enabled
    if (a.mms_over_wifi !== undefined && a.mms_over_wifi !== null)
      s.db.device.wifi_calling_mms_over_wifi = a.mms_over_wifi
  },
  set_network_mode_preference: (s, a) => {
    if (!MODES.includes(a.mode as string)) throw new Error(`not a valid network mode: ${a.mode}`)
    s.db.device.network_mode_preference = a.mode
    networkSearch(s)
  },
  remove_app_permission: (s, a) => {
    const app = s.db.device.app_statuses[a.app_name as string]
    const perm = (a.permission as string).toLowerCase()
    if (!app) throw new Error(`App '${a.app_name}' not found. Cannot remove permission.`)
    if (!(perm in app.permissions))
      throw new Error(`Permission '${perm}' not tracked for app '${a.app_name}'.`)
    app.permissions[perm] = false
  },
  simulate_network_search: (s) => {
    networkSearch(s)
  },
  assert_service_status: (s, a) => s.db.device.network_connection_status === a.expected_status,
  assert_mobile_data_status: (s, a) => mobileDataWorking(s) === a.expected_status,
  assert_internet_speed: (s, a) => {
    const { speed, desc } = speedTest(s)
    const v = speed ?? 0
    if (a.expected_desc === undefined || a.expected_desc === null) return v >= (a.expected_speed as number)
    return (
      v >= (a.expected_speed as number) && desc.toLowerCase() === (a.expected_desc as string).toLowerCase()
    )
  },
  assert_internet_not_excellent: (s) => speedTest(s).desc !== 'Excellent',
  assert_can_send_mms: (s, a) => canSendMms(s) === a.expected_status,
  assert_airplane_mode_status: (s, a) => s.db.device.airplane_mode === a.expected_status,
  assert_mobile_roaming_status: (s, a) => s.db.device.roaming_enabled === a.expected_status,
  assert_mobile_data_saver_mode_status: (s, a) => s.db.device.data_saver_mode === a.expected_status,
  assert_mobile_data_usage_exceeded: (s, a) =>
    s.db.surroundings.mobile_data_usage_exceeded === a.expected_status,
}

const toolsByName = toolMap(tools)

/** The phone toolkit over a user DB (`user_db.toml` contents). */
export function createPhone(userDb: Obj): Toolkit<PhoneState> {
  const state: PhoneState = { db: normalize(userDb) }
  return {
    state,
    tools: toolsByName,
    envFns: new Map(Object.entries(envFns)),
    db: () => state.db,
    setDb: (db) => {
      state.db = normalize(db)
    },
    floats: phoneFloats,
  }
}
