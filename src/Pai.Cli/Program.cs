using Pai.Cli;
using Spectre.Console;

// On a terminal: its width, colour as detected. Redirected (logs, CI, pipes): plain text without
// any ANSI code, tables at COLUMNS or a readable 120 columns (a pipe has no width; Spectre would
// wrap at 80). NO_COLOR, set to anything (no-color.org), turns colour off on a terminal too.
var redirected = Console.IsOutputRedirected;
var noColor = !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));
AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
{
    Ansi = redirected ? AnsiSupport.No : AnsiSupport.Detect,
    ColorSystem = redirected || noColor ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
    Interactive = redirected ? InteractionSupport.No : InteractionSupport.Detect,
    Out = new AnsiConsoleOutput(Console.Out),
});
if (redirected)
    AnsiConsole.Profile.Width = int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), out var columns) && columns > 0 ? columns : 120;
return Cli.Invoke(PaiCommand.Build().Parse(args));
