// ComputeSDK (`computesdk` from npm, unmodified) against `hearth serve --computesdk-listen`:
// COMPUTESDK_API_KEY, COMPUTESDK_TRIBUTARY_URL and COMPUTESDK_PROVIDER=computesdk come from
// the test; "ok" on the last line means every check passed.
import assert from 'node:assert/strict'
import { compute } from 'computesdk'

const template = process.argv[2]
const dir = '/tmp/csdk/dir'
const sandbox = await compute.sandbox.create({ timeout: 300000, metadata: { sdk: 'computesdk' }, templateId: template })
try {
  const r = await sandbox.runCommand('echo hello && echo oops 1>&2; exit 3')
  assert.equal(r.stdout, 'hello\n')
  assert.equal(r.stderr, 'oops\n')
  assert.equal(r.exitCode, 3)
  const env = await sandbox.runCommand('pwd; echo $FOO', { cwd: '/tmp', env: { FOO: 'bar' } })
  assert.equal(env.stdout, '/tmp\nbar\n')

  await sandbox.filesystem.mkdir(dir)
  await sandbox.filesystem.writeFile(`${dir}/hello.txt`, 'hi thére\n')
  assert.equal(await sandbox.filesystem.readFile(`${dir}/hello.txt`), 'hi thére\n')
  await sandbox.filesystem.writeFile('/tmp/csdk/new/deep/file.txt', 'made its parents')
  assert.equal(await sandbox.filesystem.readFile('/tmp/csdk/new/deep/file.txt'), 'made its parents')
  assert.equal(await sandbox.filesystem.exists(`${dir}/hello.txt`), true)
  assert.equal(await sandbox.filesystem.exists(`${dir}/nothing`), false)
  const entries = await sandbox.filesystem.readdir(dir)
  assert.deepEqual(entries.map((e) => [e.name, e.type, e.size]), [['hello.txt', 'file', 10]])
  assert.ok(entries[0].modified instanceof Date && !isNaN(entries[0].modified))
  await sandbox.filesystem.remove(dir)
  assert.equal(await sandbox.filesystem.exists(dir), false)

  const code = await sandbox.runCode('print(6 * 7)', 'python')
  assert.equal(code.output, '42\n')
  assert.equal(code.exitCode, 0)

  // Streamed: the output arrives over the socket in chunks, as it is printed.
  const chunks = []
  const errs = []
  const streamed = await sandbox.runCommand('for i in 1 2 3; do echo line$i; sleep 0.3; done; echo err >&2; exit 4', {
    onStdout: (d) => chunks.push(d),
    onStderr: (d) => errs.push(d),
  })
  assert.equal(streamed.stdout, 'line1\nline2\nline3\n')
  assert.equal(chunks.join(''), streamed.stdout)
  assert.ok(chunks.length >= 3, `one chunk a line, got ${JSON.stringify(chunks)}`)
  assert.equal(errs.join(''), 'err\n')
  assert.equal(streamed.exitCode, 4)

  // `timeout` runs it in the background and waits for it; `background` alone returns at once.
  const waited = await sandbox.runCommand('sleep 1; echo done; exit 5', { timeout: 10 })
  assert.deepEqual([waited.stdout, waited.exitCode, waited.status], ['done\n', 5, 'failed'])
  const bg = await sandbox.runCommand('sleep 0.5; echo later', { background: true })
  assert.equal(bg.status, 'running')
  assert.ok(bg.cmdId && bg.terminalId)
  const later = await sandbox.run.waitForCompletion(bg.terminalId, bg.cmdId)
  assert.deepEqual([later.stdout, later.exitCode, later.status], ['later\n', 0, 'completed'])

  // An exec-mode terminal tracks its commands.
  const exec = await sandbox.terminal.create({ pty: false })
  const ran = await exec.command.run('echo hi; exit 2')
  assert.deepEqual([ran.stdout, ran.exitCode, ran.status], ['hi\n', 2, 'failed'])
  const slow = await exec.command.run('sleep 0.5; echo slow', { background: true })
  assert.equal((await slow.wait(10)).stdout, 'slow\n')
  assert.deepEqual((await exec.command.list()).map((c) => c.id), [ran.id, slow.id])
  await exec.destroy()

  // A PTY over the socket: input, output, resize.
  const before = Date.now()
  const pty = await sandbox.terminal.create({ pty: true })
  // The client waits up to 5 s for `terminal:created`; hearth sends it at once.
  assert.ok(Date.now() - before < 4000, 'terminal:created arrived')
  let screen = ''
  pty.on('output', (d) => { screen += d })
  const until = async (what) => {
    for (let i = 0; i < 100 && !screen.includes(what); i++) await new Promise((r) => setTimeout(r, 100))
    assert.ok(screen.includes(what), `${JSON.stringify(what)} in ${JSON.stringify(screen)}`)
  }
  pty.write('echo $((6 * 7))\n')
  await until('42')
  pty.resize(100, 30)
  pty.write('stty size\n')
  await until('30 100')
  assert.ok((await sandbox.terminal.list()).some((t) => t.id === pty.id && t.pty))
  await pty.destroy()
  assert.equal((await sandbox.terminal.list()).some((t) => t.id === pty.id), false)

  // What hearth does not serve says so, in each surface's error shape.
  await assert.rejects(sandbox.server.list(), /API request failed \(501\): hearth does not serve/)
  await assert.rejects(compute.snapshot.list(), /Gateway API error: .*hearth does not serve/)
  // The client itself refuses to list sandboxes; it sends nothing.
  await assert.rejects(compute.sandbox.list(), /The gateway does not support listing sandboxes/)

  assert.equal((await compute.sandbox.getById(sandbox.sandboxId)).sandboxId, sandbox.sandboxId)
  await compute.sandbox.extendTimeout(sandbox.sandboxId, { duration: 600000 })
} finally {
  await sandbox.destroy()
}
assert.equal(await compute.sandbox.getById(sandbox.sandboxId), null)
console.log('ok')
