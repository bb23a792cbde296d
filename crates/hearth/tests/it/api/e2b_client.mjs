// The E2B JS SDK (`e2b` from npm, unmodified) against `hearth serve --e2b-listen`: the core
// flow of e2b_client.py. E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY come from the test;
// "ok" on the last line means every check passed.
import { CommandExitError, Sandbox } from 'e2b'

function check(condition, what) {
  if (!condition) throw new Error(what)
}

const template = process.argv[2]
const sbx = await Sandbox.create(template, { timeoutMs: 300_000, metadata: { sdk: 'js' } })
try {
  const result = await sbx.commands.run('echo hello; echo oops >&2')
  check(result.exitCode === 0, `exit code ${result.exitCode}`)
  check(result.stdout === 'hello\n', `stdout ${JSON.stringify(result.stdout)}`)
  check(result.stderr === 'oops\n', `stderr ${JSON.stringify(result.stderr)}`)

  try {
    await sbx.commands.run('echo bad >&2; exit 4')
    throw new Error('a failing command did not throw')
  } catch (e) {
    check(e instanceof CommandExitError, `a failing command threw ${e}`)
    check(e.exitCode === 4 && e.stderr === 'bad\n', `failure ${e.exitCode} ${e.stderr}`)
  }

  const env = await sbx.commands.run('echo $GREETING; pwd; id -u', {
    envs: { GREETING: 'hi' },
    cwd: '/tmp',
    user: 'user',
  })
  check(env.stdout === 'hi\n/tmp\n1000\n', `envs, cwd, user: ${JSON.stringify(env.stdout)}`)

  const background = await sbx.commands.run('sleep 600', { background: true })
  check(background.pid > 0, `pid ${background.pid}`)
  check(await background.kill(), 'kill of a background command')
  try {
    await background.wait()
    throw new Error('a killed command did not throw')
  } catch (e) {
    check(e instanceof CommandExitError, `a killed command threw ${e}`)
  }
  const waited = await sbx.commands.run('sleep 1; echo done', { background: true })
  check((await waited.wait()).stdout === 'done\n', 'background wait')

  let screen = ''
  const decoder = new TextDecoder()
  const terminal = await sbx.pty.create({ rows: 24, cols: 80, onData: (d) => { screen += decoder.decode(d) } })
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('stty size; exit\n'))
  await terminal.wait()
  check(screen.includes('24 80'), `PTY size not seen in ${JSON.stringify(screen)}`)

  const text = 'héllo wörld ✓\n'
  await sbx.files.write('/tmp/js/ünï.txt', text)
  check((await sbx.files.read('/tmp/js/ünï.txt')) === text, 'non-ASCII round trip')
  const bytes = new Uint8Array(70_000).map((_, i) => i % 256)
  await sbx.files.write('/tmp/js/blob.bin', bytes.buffer)
  const back = await sbx.files.read('/tmp/js/blob.bin', { format: 'bytes' })
  check(back.length === bytes.length && back.every((b, i) => b === bytes[i]), 'binary round trip')
  const names = (await sbx.files.list('/tmp/js')).map((e) => e.name).sort()
  check(JSON.stringify(names) === JSON.stringify(['blob.bin', 'ünï.txt']), `list ${names}`)
  check(await sbx.files.exists('/tmp/js/blob.bin'), 'exists')
  await sbx.files.rename('/tmp/js/blob.bin', '/tmp/js/moved.bin')
  check(!(await sbx.files.exists('/tmp/js/blob.bin')), 'rename moved the file')
  await sbx.files.remove('/tmp/js/moved.bin')
  check(!(await sbx.files.exists('/tmp/js/moved.bin')), 'remove')

  await sbx.setTimeout(600_000)
  const listed = (await Sandbox.list().nextItems()).map((s) => s.sandboxId)
  check(listed.includes(sbx.sandboxId), `${sbx.sandboxId} not in ${listed}`)
  const info = await sbx.getInfo()
  check(info.metadata.sdk === 'js', `metadata ${JSON.stringify(info.metadata)}`)
} finally {
  check(await sbx.kill(), 'kill of a running sandbox')
}
check(!(await Sandbox.kill(sbx.sandboxId)), 'a second kill says false')
console.log('ok')
