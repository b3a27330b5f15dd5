// BSI's @secvisogram/csaf-validator-lib over CSAF 2.0 files, in one node process:
//   node validate_csaf.mjs <library dir> <file.json>...
// Runs what validateStrict enforces: the strict CSAF 2.0 schema and every mandatory test
// (6.1.1-6.1.33, the VEX profile's 6.1.27.x among them); the library is imported once, then
// each file is validated. Prints {validator, ran, files: {path: {isValid, errors}}}; exit 0 when
// every file is valid, 1 when any is not.
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const [libraryDir, ...files] = process.argv.slice(2)
if (!libraryDir || !files.length) {
  console.error('usage: node validate_csaf.mjs <library dir> <file.json>...')
  process.exit(2)
}
const library = pathToFileURL(libraryDir + '/')
const load = async (name) => import(new URL(name, library).href)

const validate = (await load('validate.js')).default
const tests = [(await load('schemaTests.js')).csaf_2_0_strict,
  ...Object.values(await load('mandatoryTests.js'))]
const pkg = JSON.parse(readFileSync(new URL('package.json', library), 'utf-8'))

const out = { validator: `${pkg.name} ${pkg.version}`, ran: tests.map((t) => t.name), files: {} }
for (const file of files) {
  const result = await validate(tests, JSON.parse(readFileSync(file, 'utf-8')))
  const errors = result.tests.flatMap((t) =>
    t.errors.map(({ instancePath, message }) => ({ test: t.name, instancePath, message })))
  out.files[file] = { isValid: result.isValid && errors.length === 0, errors }
}
console.log(JSON.stringify(out))
process.exit(Object.values(out.files).every((f) => f.isValid) ? 0 : 1)
