using System.Diagnostics;
using Microsoft.VisualStudio.TestPlatform.ObjectModel;
using Microsoft.VisualStudio.TestPlatform.ObjectModel.Client;

namespace Pai.Progress;

/// <summary>
/// Progress of a `dotnet test` run, which otherwise prints nothing between a project's start and
/// its summary (18 minutes for the whole suite): one line per finished test class, with its test
/// count, failures and time, and one a minute while nothing finishes. The lines never read like the
/// per-assembly summary (no "Passed:", "Failed:" or "- NAME.dll ("), which .ci/run adds up.
/// </summary>
[FriendlyName("pai-progress")]
[ExtensionUri("logger://pai/progress")]
public sealed class ProgressLogger : ITestLogger
{
    static readonly TimeSpan Quiet = TimeSpan.FromMinutes(1);
    // Checked this often, so a quiet minute is reported within a few seconds of its end.
    static readonly TimeSpan Tick = TimeSpan.FromSeconds(5);

    readonly Lock gate = new();
    readonly Stopwatch run = Stopwatch.StartNew();
    readonly Stopwatch sinceLine = Stopwatch.StartNew();
    Timer? heartbeat;
    string? assembly, testClass;
    TimeSpan classStarted, classEnded;
    int classTests, classFailed, done, failed;

    /// <inheritdoc/>
    public void Initialize(TestLoggerEvents events, string testRunDirectory)
    {
        events.TestRunStart += (_, e) =>
        {
            lock (gate) assembly ??= string.Join(", ", e.TestRunCriteria.Sources?.Select(s => Path.GetFileNameWithoutExtension(s)) ?? []);
        };
        events.TestResult += (_, e) => Result(e.Result);
        events.TestRunComplete += (_, _) =>
        {
            heartbeat?.Dispose();
            lock (gate) FinishClass();
        };
        heartbeat = new Timer(_ => Heartbeat(), null, Tick, Tick);
    }

    void Result(TestResult result)
    {
        var source = Path.GetFileNameWithoutExtension(result.TestCase.Source);
        var name = ClassOf(source, result.TestCase.FullyQualifiedName);
        lock (gate)
        {
            if (name != testClass || source != assembly)
            {
                FinishClass();
                (assembly, testClass, classStarted, classTests, classFailed) = (source, name, run.Elapsed - result.Duration, 0, 0);
            }
            classTests++;
            classEnded = run.Elapsed;
            done++;
            if (result.Outcome == TestOutcome.Failed)
            {
                classFailed++;
                failed++;
            }
        }
    }

    // The test class: the name's part after the assembly's (Pai.Tests.HvpTests.… → HvpTests), whose
    // tests' own names may hold dots; else all but the last part.
    static string ClassOf(string assembly, string fullName)
    {
        if (fullName.StartsWith(assembly + ".", StringComparison.Ordinal))
        {
            var rest = fullName[(assembly.Length + 1)..];
            var dot = rest.IndexOf('.');
            return dot < 0 ? rest : rest[..dot];
        }
        var paren = fullName.IndexOf('(');
        var head = paren < 0 ? fullName : fullName[..paren];
        var last = head.LastIndexOf('.');
        return last < 0 ? head : head[..last];
    }

    void FinishClass()
    {
        // VSTest tells of no class's end: a class is done when a test of the next one (or the run) ends.
        if (testClass is null) return;
        Write($"{assembly}: {testClass} done, {classTests} test{(classTests == 1 ? "" : "s")}{(classFailed > 0 ? $" ({classFailed} failed)" : "")} " +
              $"in {Duration(classEnded - classStarted)}; {done} done, {Duration(classEnded)} into the run");
        testClass = null;
    }

    void Heartbeat()
    {
        lock (gate)
            if (sinceLine.Elapsed >= Quiet)
                Write($"{assembly ?? "tests"}: still running after {Duration(run.Elapsed)}, {done} done{(failed > 0 ? $" ({failed} failed)" : "")}" +
                      (testClass is null ? "" : $", the last in {testClass}"));
    }

    void Write(string line)
    {
        Console.WriteLine("  " + line);
        sinceLine.Restart();
    }

    static string Duration(TimeSpan t) =>
        t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes} m {t.Seconds} s" : $"{t.TotalSeconds:F1} s";
}
