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

  assert.equal((await compute.sandbox.getById(sandbox.sandboxId)).sandboxId, sandbox.sandboxId)
  await compute.sandbox.extendTimeout(sandbox.sandboxId, { duration: 600000 })
} finally {
  await sandbox.destroy()
}
assert.equal(await compute.sandbox.getById(sandbox.sandboxId), null)
console.log('ok')
